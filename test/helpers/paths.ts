import { fileURLToPath } from 'node:url'
import { dirname, join, resolve } from 'node:path'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
/** The read-only ../shared beside the checkout (CI lays it out the same way). */
export const SHARED = process.env.TESSERA_SHARED ?? resolve(REPO, '..', 'shared')
export const STORIES = join(SHARED, 'models', 'stories260K.bin')
export const REFERENCE = join(SHARED, 'reference', 'stories260K.public.json')

export const tempDir = (prefix: string): string => mkdtempSync(join(tmpdir(), `tessera-${prefix}-`))
