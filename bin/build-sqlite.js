#!/usr/bin/env node
// `npm install`'s last step: compile better-sqlite3 (the ledger's SQLite) from its npm sources with
// node-gyp. Its own install script would first fetch a prebuilt binary from GitHub, outside the
// npm registry, so package.json's allowScripts denies it and this runs instead. Nothing to do when
// a binary that loads is already there.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

const require = createRequire(import.meta.url)
let dir
try {
  dir = dirname(require.resolve('better-sqlite3/package.json'))
} catch {
  process.exit(0) // not installed (e.g. npm install --omit of it): nothing to build
}
const binary = join(dir, 'build', 'Release', 'better_sqlite3.node')
const loads = () => spawnSync(process.execPath, ['-e', `new (require(${JSON.stringify(join(dir, 'lib', 'index.js'))}))(':memory:').close()`]).status === 0
if (existsSync(binary) && loads()) process.exit(0)

console.error("tessera: compiling better-sqlite3 (the ledger's SQLite) from source with node-gyp: about a minute…")
// npm puts its own node-gyp beside every install script (npm_config_node_gyp); a global one otherwise.
const gyp = process.env.npm_config_node_gyp
const [cmd, args] = gyp !== undefined ? [process.execPath, [gyp, 'rebuild', '--release']] : ['node-gyp', ['rebuild', '--release']]
// Its log (and the compiler's) is shown only when the build fails, as npm does for dependencies' scripts.
const r = spawnSync(cmd, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 2 ** 20 })
if (r.status !== 0 || !loads()) {
  process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`)
  console.error('tessera: building better-sqlite3 failed: it needs a C++ toolchain and Python 3 (Debian: apt-get install build-essential python3)')
  process.exit(1)
}
