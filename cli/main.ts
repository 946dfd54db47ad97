/**
 * `tessera` — one command line for node operators and users. Each subcommand lives in
 * commands/ and registers itself here.
 */
import { Command } from 'commander'
import { TesseraError } from '../shared/errors.js'
import { VERSION } from '../shared/version.js'
import { registerBuildModel } from './commands/build-model.js'
import { registerChain } from './commands/chain.js'
import { registerDoctor } from './commands/doctor.js'
import { registerGenerate } from './commands/generate.js'
import { registerPlan } from './commands/plan.js'
import { registerUp } from './commands/up.js'
import { registerNode } from './commands/node.js'
import { registerRelay } from './commands/relay.js'
import { registerSimulate } from './commands/simulate.js'
import { registerStake } from './commands/stake.js'
import { registerZk } from './commands/zk.js'

const program = new Command('tessera')
  .description('Sharded, verifiable LLM inference across native GPUs and browser tabs')
  .version(VERSION)
  .showHelpAfterError()

registerBuildModel(program)
registerChain(program)
registerDoctor(program)
registerGenerate(program)
registerPlan(program)
registerUp(program)
registerNode(program)
registerRelay(program)
registerSimulate(program)
registerStake(program)
registerZk(program)

// commander reports its own usage errors (unknown option, bad value) and exits; what reaches the
// catch was thrown by a command. Our own errors carry advice already: one line, no stack. Anything
// else is a bug worth a stack trace.
try {
  await program.parseAsync()
} catch (err) {
  if (err instanceof TesseraError) console.error(`tessera: ${err.message}`)
  else console.error(err)
  process.exitCode = 1
}
