// A table with column headings, in a box that scrolls sideways on a narrow screen.
import type { ComponentChildren } from "preact";

/** `head`: the column headings; children: the body's rows. */
export function Table({ head, children }: { head: ComponentChildren[]; children: ComponentChildren }) {
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            {head.map((label, index) => (
              <th key={index} scope="col">
                {label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </div>
  );
}
