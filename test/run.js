#!/usr/bin/env node
// `npm test` after the type check: vitest inside a fresh network namespace that holds only
// loopback (root + unshare, as on CI), so no test can reach beyond this machine. Where that is
// not possible the tests still run, on the host's loopback, and it says so.
import { spawnSync } from 'node:child_process'

const vitest = ['npx', 'vitest', 'run', ...process.argv.slice(2)]
const quote = (a) => `'${a.replace(/'/g, `'\\''`)}'`
const isolated = process.getuid?.() === 0 && spawnSync('unshare', ['-n', 'true']).status === 0
function onHost() {
  console.error('test/run.js: no network namespace (needs root and unshare); running on the host loopback')
  return spawnSync(vitest[0], vitest.slice(1), { stdio: 'inherit' })
}
const r = isolated ? spawnSync('unshare', ['-n', 'sh', '-c', `ip link set lo up && exec ${vitest.map(quote).join(' ')}`], { stdio: 'inherit' }) : onHost()
process.exit(r.status ?? 1)
