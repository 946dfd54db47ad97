/**
 * `tessera simulate` — run a scenario in the simulator (sim/): a built-in one by name or a JSON
 * scenario file; prints what sessions got and, with --json, writes the whole result.
 */
import type { Command } from 'commander'
import { readFile, writeFile } from 'node:fs/promises'
import { InputError } from '../../shared/errors.js'
import { BUILT_IN, describeResult, parseScenario, runScenario, type ScenarioFile } from '../../sim/scenario.js'

async function load(name: string): Promise<ScenarioFile> {
  if (name in BUILT_IN) return BUILT_IN[name]
  let text: string
  try {
    text = await readFile(name, 'utf8')
  } catch {
    throw new InputError(`no scenario "${name}": give one of ${Object.keys(BUILT_IN).join(', ')} or a JSON scenario file`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new InputError(`${name} is not JSON: ${(err as Error).message}`)
  }
  return parseScenario(json)
}

export function registerSimulate(program: Command): void {
  program
    .command('simulate')
    .description('run a scenario in the simulator: the shipped client over simulated peers and links, in virtual time')
    .argument('<scenario>', `a built-in scenario (${Object.keys(BUILT_IN).join(', ')}) or a JSON scenario file (README: Simulation)`)
    .option('--json <file>', 'also write the whole result as JSON')
    .action(async (name: string, o: { json?: string }) => {
      const scenario = await load(name)
      console.error(`simulating ${name}…`)
      const r = await runScenario(scenario)
      for (const line of describeResult(r)) console.log(line)
      if (o.json !== undefined) await writeFile(o.json, `${JSON.stringify({ scenario, result: r.result }, null, 2)}\n`)
    })
}
