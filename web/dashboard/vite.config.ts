// Builds the dashboard into the Python package (service/dashboard/static), served by the app at /.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  resolve: {
    alias: { "@client": fileURLToPath(new URL("../client/src/index.ts", import.meta.url)) },
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: fileURLToPath(new URL("../../service/dashboard/static", import.meta.url)),
    emptyOutDir: true,
    // Everything is served by the service itself: no CDN, no inline module preload polyfill fetches.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: {
    // `npm run dev`: the API and its WebSockets come from a service on :8000.
    proxy: {
      "/v1": { target: "http://127.0.0.1:8000", ws: true },
      "/healthz": "http://127.0.0.1:8000",
    },
  },
});
