// The project's models, for the pickers of several pages.
import type { components } from "@client";
import { useSession } from "./app";
import { useLoad, type Loaded } from "./components/common";

export type ModelObject = components["schemas"]["ModelObject"];

/** Every model the key can use (base, fine-tuned, checkpoints are named by hand). */
export function useModels(): Loaded<ModelObject[]> {
  const session = useSession();
  return useLoad(async () => (await session.request<{ data: ModelObject[] }>("GET", "/v1/models")).data);
}

/** A <datalist> of the models, so a field accepts any name (a checkpoint's) and suggests these. */
export function ModelOptions({ id, models }: { id: string; models: ModelObject[] | null }) {
  return (
    <datalist id={id}>
      {(models ?? []).map((model) => (
        <option key={model.id} value={model.id} />
      ))}
    </datalist>
  );
}
