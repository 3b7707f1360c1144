// The project's models, for the pickers of several pages.
import type { components } from "@client";
import { useSession } from "./app";
import { useLoad, type Loaded } from "./components/common";

export type ModelObject = components["schemas"]["ModelObject"];

/** Every model the key can use: bases and fine-tuned models (checkpoints are named by hand). */
export function useModels(): Loaded<ModelObject[]> {
  const session = useSession();
  return useLoad(async () => (await session.request<{ data: ModelObject[] }>("GET", "/v1/models")).data);
}
