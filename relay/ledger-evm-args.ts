/**
 * How the Ledger interface's values become TesseraStake's arguments: ledger units as wei, evidence
 * kinds as their uint8, Groth16 proofs as the Solidity verifier takes them, signals as the hash the
 * contract compares, and the accused's claim (model, output, input) read from its signed reply.
 *
 * Units: one ledger unit (e.g. a join stake of 100) is WEI_PER_UNIT = 1e15 wei; amounts are
 * rounded down to whole wei.
 */
import { concat, keccak256, pad, toHex, type Hex } from 'viem'
import { InputError } from '../shared/errors.js'
import type { Evidence } from '../shared/ledger/types.js'
import type { Groth16Proof } from '../shared/zk/types.js'

/** Wei per ledger unit: a join stake of 100 units is 0.1 ETH. */
export const WEI_PER_UNIT = 10n ** 15n
const UNIT_DECIMALS = 15

export function toWei(units: number): bigint {
  if (!Number.isFinite(units) || units <= 0) throw new InputError(`a stake must be a positive finite amount, not ${units}`)
  const [whole, frac = ''] = units.toFixed(UNIT_DECIMALS).split('.')
  const wei = BigInt(whole) * WEI_PER_UNIT + BigInt(frac.padEnd(UNIT_DECIMALS, '0').slice(0, UNIT_DECIMALS))
  if (wei === 0n) throw new InputError(`${units} units is less than one wei`)
  return wei
}
export const toUnits = (wei: bigint): number => Number(wei / WEI_PER_UNIT) + Number(wei % WEI_PER_UNIT) / 1e15

/** The kinds in the order of their uint8 on chain. */
export const EVIDENCE_KINDS = ['redundant', 'spot', 'optimistic', 'dispute', 'signature', 'proof'] as const

/** What slashByProof needs beyond the evidence: all attested by the arbiter from the accused's signed reply. */
export interface ProofSlash {
  accused: string
  evidenceId: Hex
  model: string
  /** The accused's claimed output and the input, as field elements (the circuit's public signals). */
  claimedOutput: bigint[]
  claimedInput: bigint[]
  proof: Groth16Proof
  publicSignals: string[]
  reporter: string
}

type Pair = [bigint, bigint]

/** The Groth16 proof as the Solidity verifier takes it (G2 coordinates swapped, as snarkjs's calldata export does). */
export function proofCallArgs(p: Groth16Proof): { a: Pair; b: [Pair, Pair]; c: Pair } {
  const n = (s: string): bigint => BigInt(s)
  return {
    a: [n(p.pi_a[0]), n(p.pi_a[1])],
    b: [
      [n(p.pi_b[0][1]), n(p.pi_b[0][0])],
      [n(p.pi_b[1][1]), n(p.pi_b[1][0])]
    ],
    c: [n(p.pi_c[0]), n(p.pi_c[1])]
  }
}

/** keccak256 of field elements as 32-byte words: what the contract hashes signals with. */
export const signalsHash = (xs: bigint[]): Hex => keccak256(xs.length === 0 ? '0x' : concat(xs.map((x) => pad(toHex(x), { size: 32 }))))

/** The accused's claim from its signed reply: model, output and input as field elements. */
export async function proofClaim(e: Evidence): Promise<Pick<ProofSlash, 'model' | 'claimedOutput' | 'claimedInput'>> {
  const { openZkReply, int8Of, int32Of } = await import('../shared/protocol/zk.js')
  const { toField } = await import('../shared/zk/field.js')
  const reply = await openZkReply(e.receipts[0])
  const counter = e.detail.counterProof as { proof?: Partial<Groth16Proof>; publicSignals?: unknown }
  const p = counter.proof
  if (!Array.isArray(p?.pi_a) || !Array.isArray(p.pi_b) || !Array.isArray(p.pi_c) || !Array.isArray(p.pi_b[0]) || !Array.isArray(p.pi_b[1])) {
    throw new InputError('detail.counterProof needs a Groth16 proof (pi_a, pi_b, pi_c)')
  }
  const input = int8Of(reply.input)
  const output = Array.from(int32Of(reply.output), (v) => toField(v))
  if (!Array.isArray(counter.publicSignals)) throw new InputError('detail.counterProof needs publicSignals')
  // Public input mode carries the int8 input itself; committed mode one Poseidon hash of it.
  const inputSignals = counter.publicSignals.length - output.length - 1
  const claimedInput = inputSignals === input.length ? Array.from(input, (v) => toField(v)) : [(await import('../shared/zk/commit.js')).inputCommitment(input)]
  return { model: reply.model, claimedOutput: output, claimedInput }
}
