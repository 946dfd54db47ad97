/** Tessera's version, read from package.json (one place): records, the CLI and the API report it. */
import pkg from '../package.json' with { type: 'json' }

export const VERSION: string = pkg.version
