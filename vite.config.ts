import { defineConfig } from 'vite'

// The browser build: pages, the browser runner and the SDK, all bundling the same shared/ core.
export default defineConfig({
  root: 'web',
  build: { outDir: '../dist/web', emptyOutDir: true, target: 'es2022' },
  server: {
    // crossOriginIsolated lets onnxruntime-web use WASM threads
    headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }
  }
})
