#!/usr/bin/env node
// Entry point of `npx tessera`: runs the TypeScript sources directly (tsx), after the Node 20
// shim that libp2p needs (a no-op on Node 22+).
import { register } from 'tsx/esm/api'

register()
await import('../host/shim.ts')
await import('../cli/main.ts')
