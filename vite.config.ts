import { copyFileSync, mkdirSync, readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { defineConfig, type Plugin } from 'vite'

// The browser build: the pages, the browser contributor and the SDK, all bundling the same
// shared/ core. The relay serves dist/web as is (see relay/http.ts).
const here = fileURLToPath(new URL('.', import.meta.url))
const web = resolve(here, 'web')

/**
 * Copies onnxruntime-web's runtime (the .wasm binaries and their .mjs loaders) to `ort/` in the
 * output, so tabs load them from the relay (`ort.env.wasm.wasmPaths = '/ort/'`), never a CDN.
 */
function ortRuntimeFiles(): Plugin {
  const from = resolve(here, 'node_modules/onnxruntime-web/dist')
  return {
    name: 'tessera:ort-runtime-files',
    apply: 'build',
    writeBundle(options) {
      const to = join(options.dir ?? resolve(here, 'dist/web'), 'ort')
      const files = readdirSync(from).filter((f) => /^ort-wasm-simd-threaded.*\.(wasm|mjs)$/.test(f))
      if (!files.some((f) => f.endsWith('.wasm'))) this.error(`no onnxruntime-web .wasm files in ${from}`)
      mkdirSync(to, { recursive: true })
      for (const f of files) copyFileSync(join(from, f), join(to, f))
    }
  }
}

export default defineConfig({
  root: 'web',
  plugins: [ortRuntimeFiles()],
  build: {
    outDir: '../dist/web',
    emptyOutDir: true,
    target: 'es2022',
    // libp2p and onnxruntime-web are large by nature; the pages load them once and cache them.
    chunkSizeWarningLimit: 4000,
    // Vite 8's name for rollupOptions (rolldown is its bundler).
    rolldownOptions: {
      input: {
        index: resolve(web, 'index.html'),
        contribute: resolve(web, 'contribute.html'),
        playground: resolve(web, 'playground.html'),
        network: resolve(web, 'network.html'),
        sdk: resolve(web, 'src/sdk.ts')
      },
      // Third-party pages `import { connect } from '<relay>/sdk.js'`: keep the entry's exports.
      preserveEntrySignatures: 'allow-extension',
      output: {
        // The SDK has a stable address; everything else is content-hashed under assets/.
        entryFileNames: (chunk) => (chunk.name === 'sdk' ? 'sdk.js' : 'assets/[name]-[hash].js'),
        chunkFileNames: 'assets/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]'
      }
    }
  },
  // onnxruntime-web finds its .wasm/.mjs next to itself; pre-bundling would move it away from them.
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  server: {
    // crossOriginIsolated lets onnxruntime-web use WASM threads
    headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }
  },
  preview: {
    headers: { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' }
  }
})
