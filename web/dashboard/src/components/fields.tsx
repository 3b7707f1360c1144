// Labelled form fields, and the model names a field suggests.
import type { ComponentChildren } from "preact";

export interface FieldProps {
  id: string;
  label: string;
  value: string;
  onInput: (value: string) => void;
  type?: "text" | "number";
  step?: string;
  min?: string;
  placeholder?: string;
  /** The id of a <datalist> of suggestions (model names). */
  list?: string;
  required?: boolean;
  children?: ComponentChildren;
}

/** A text or number input with its label; children go after it (a datalist). */
export function Field({ id, label, onInput, type = "text", children, ...rest }: FieldProps) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} type={type} {...rest} onInput={(e) => onInput((e.target as HTMLInputElement).value)} />
      {children}
    </div>
  );
}

/** A <datalist> of model names: the field still accepts any name (a checkpoint's). */
export function ModelOptions({ id, names }: { id: string; names: string[] }) {
  return (
    <datalist id={id}>
      {names.map((name) => (
        <option key={name} value={name} />
      ))}
    </datalist>
  );
}
