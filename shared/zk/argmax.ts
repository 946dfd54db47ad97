/**
 * The sampling step of an LLM route, proved: "token t is the argmax of the logits the last hop
 * committed to". It does NOT prove the layers that made those logits (no one can prove a
 * transformer block of a real model today); it lets a requester that never sees the logits check
 * that whoever sampled for it (the relay's API) took the greedy token of what the last hop
 * signed, instead of a token of its own choosing.
 *
 * Logits are made exact integers first: q = round(logit · 2^16), clamped to 24 bits signed
 * (|logit| < 128). Greedy decoding under proof samples argmax(q), lowest id on ties, which is
 * llama2.c's argmax of the floats except where two logits are within 2^-16 of each other.
 *
 * The last hop signs Poseidon over q packed ten to a field element (24-bit slots of q + 2^23) in
 * its receipt. The circuit takes those packed elements as private inputs, unpacks them (a bit
 * decomposition, which also range-checks every value), hashes them to the public commitment,
 * and checks q[t] − q[i] − [i < t] ≥ 0 for every i by 24 more bits each: V·48 constraints plus
 * the selection of q[t] and the hash, ~29k for a vocabulary of 512 (powers of tau 2^15).
 */
import { base64ToBytes, bytesToBase64 } from '../base64.js'
import { InputError, ProtocolError } from '../errors.js'
import { chainHash } from './commit.js'
import { CHAIN_HASH, CIRCOMLIB_VERSION, CIRCOM_VERSION } from './circuit.js'
import { parseSignal } from './field.js'
import { pack } from './layout.js'
import type { VerificationKey } from './types.js'

/** q = round(logit · 2^LOGIT_EXP). */
export const LOGIT_EXP = 16
/** q ∈ [−2^23, 2^23). */
export const LOGIT_BITS = 24
/** Values per packed field element: 10 × 24 = 240 bits < 253. */
export const LOGIT_SLOTS = 10

const HALF = 2 ** (LOGIT_BITS - 1)

/** The integers the commitment and the proof are about. Throws on a NaN (no argmax to prove). */
export function quantizeLogits(row: ArrayLike<number>): Int32Array {
  const q = new Int32Array(row.length)
  for (let i = 0; i < row.length; i++) {
    const v = row[i]
    if (Number.isNaN(v)) throw new InputError(`logit ${i} is NaN: there is no argmax to prove`)
    q[i] = Math.min(HALF - 1, Math.max(-HALF, Math.round(v * 2 ** LOGIT_EXP)))
  }
  return q
}

/** The greedy token under proof: argmax of q, the lowest id on ties. */
export function provedArgmax(q: ArrayLike<number>): number {
  let best = 0
  for (let i = 1; i < q.length; i++) if (q[i] > q[best]) best = i
  return best
}

/** q + 2^23 in 24-bit slots, ten to an element: what the hop hashes and the circuit unpacks. */
export function packLogits(q: ArrayLike<number>): bigint[] {
  const out: bigint[] = []
  for (let at = 0; at < q.length; at += LOGIT_SLOTS) {
    out.push(
      pack(
        Array.from({ length: Math.min(LOGIT_SLOTS, q.length - at) }, (_, i) => q[at + i] + HALF),
        LOGIT_BITS
      )
    )
  }
  return out
}

/** What the last hop signs in its receipt (decimal): Poseidon chain over the packed logits. */
export function logitsCommitment(q: ArrayLike<number>): string {
  return chainHash(packLogits(q)).toString()
}

/** The circuit's inputs for proving that `token` is the argmax of `q`. */
export function samplingInput(q: ArrayLike<number>, token: number): Record<string, string | string[]> {
  if (!Number.isInteger(token) || token < 0 || token >= q.length) throw new InputError(`token ${token} is outside the vocabulary of ${q.length}`)
  return { packed: packLogits(q).map(String), token: String(token) }
}

/** Everything a requester needs to check sampling proofs for one vocabulary size; no logits. */
export interface SamplingEntry {
  vocab: number
  logitExp: number
  logitBits: number
  verificationKey: VerificationKey
  constraints: number
  power: number
  circuitHash: string
}

/** Whoever samples (the relay's client) proves with this; native only (it reads the proving key). */
export interface SamplingProver {
  entry: SamplingEntry
  /** Throws InputError when `token` is not the argmax of `q`. */
  prove(q: Int32Array, token: number): Promise<{ proof: Uint8Array; publicSignals: string[]; ms: number }>
}

/** One proven token: the last hop's signed receipt (with its logits commitment) and the proof. */
export interface SamplingProof {
  /** Index of the token in the generation. */
  index: number
  token: number
  /** Logits the token was chosen among: which circuit (SamplingEntry) the proof is for. */
  vocab: number
  /** The peer that signed the commitment (the last hop). */
  peer: string
  /** That peer's signed receipt for the step whose last row the token was sampled from. */
  receipt: Uint8Array
  /** 256-byte Groth16 proof (zk/proof.ts) and its public signals [commitment, token]. */
  proof: Uint8Array
  publicSignals: string[]
}

/** Public signals: [commitment, token]. Throws ZK_MALFORMED if they cannot be. */
export function decodeSamplingSignals(signals: unknown, vocab: number): { commitment: bigint; token: number } {
  const bad = (why: string): ProtocolError => new ProtocolError('ZK_MALFORMED', `sampling proof has malformed public signals: ${why}`)
  if (!Array.isArray(signals) || signals.length !== 2) throw bad('expected [commitment, token]')
  const [c, t] = signals.map((s) => (typeof s === 'string' ? parseSignal(s) : undefined))
  if (c === undefined || t === undefined) throw bad('not field elements')
  if (t >= BigInt(vocab)) throw bad(`token ${t} is outside the vocabulary of ${vocab}`)
  return { commitment: c, token: Number(t) }
}

/** circom source of the argmax circuit for a vocabulary of `vocab`. Deterministic. */
export function samplingCircuitSource(vocab: number): string {
  if (!Number.isInteger(vocab) || vocab < 2) throw new InputError(`a vocabulary needs at least 2 tokens, not ${vocab}`)
  const groups = Math.ceil(vocab / LOGIT_SLOTS)
  const B = LOGIT_BITS
  return `// Generated by tessera shared/zk/argmax.ts for circom ${CIRCOM_VERSION} (--O2) and circomlib ${CIRCOMLIB_VERSION}.
// token = argmax(q), lowest index on ties, over ${vocab} logits committed as ${groups} packed elements.
pragma circom 2.1.0;

include "circomlib/circuits/poseidon.circom";
include "circomlib/circuits/bitify.circom";
include "circomlib/circuits/comparators.circom";
${CHAIN_HASH}
template Argmax() {
    signal input packed[${groups}];
    signal input token;
    signal output commitment;

    // Unpack: 24 bits per slot, q = slot - 2^23. The decomposition is unique (≤ 240 bits), so it
    // range-checks each value and binds q to the packed elements the commitment hashes.
    signal q[${vocab}];
    component bits[${groups}];
    for (var g = 0; g < ${groups}; g++) {
        var n = ${vocab} - ${LOGIT_SLOTS} * g < ${LOGIT_SLOTS} ? ${vocab} - ${LOGIT_SLOTS} * g : ${LOGIT_SLOTS};
        bits[g] = Num2Bits(n * ${B});
        bits[g].in <== packed[g];
        for (var i = 0; i < n; i++) {
            var v = 0;
            for (var b = 0; b < ${B}; b++) v += bits[g].out[${B} * i + b] * 2 ** b;
            q[${LOGIT_SLOTS} * g + i] <== v - ${HALF};
        }
    }

    // The commitment: the chain commit.ts computes over the packed elements.
    component commit = ChainHash(${groups});
    for (var g = 0; g < ${groups}; g++) commit.in[g] <== packed[g];
    commitment <== commit.out;

    // eq[i] = (i == token); exactly one is set, so token < ${vocab}. qt = q[token].
    component eq[${vocab}];
    signal picked[${vocab}];
    var ones = 0;
    var qt = 0;
    for (var i = 0; i < ${vocab}; i++) {
        eq[i] = IsZero();
        eq[i].in <== token - i;
        picked[i] <== eq[i].out * q[i];
        ones += eq[i].out;
        qt += picked[i];
    }
    ones === 1;

    // q[token] - q[i] - [i < token] ≥ 0, by ${B} bits: ≥ every logit, > those before it.
    component ge[${vocab}];
    var before = 0;
    for (var i = ${vocab} - 1; i >= 0; i--) {
        ge[i] = Num2Bits(${B});
        ge[i].in <== qt - q[i] - before;
        before += eq[i].out;
    }
}

component main {public [token]} = Argmax();
`
}

/** A sampling proof in JSON (the relay's API): receipt and proof as base64. */
export interface SamplingProofJson {
  index: number
  token: number
  vocab: number
  peer: string
  receipt: string
  proof: string
  publicSignals: string[]
}

export const samplingToJson = (p: SamplingProof): SamplingProofJson => ({ ...p, receipt: bytesToBase64(p.receipt), proof: bytesToBase64(p.proof) })

/** Throws ZK_MALFORMED on anything that is not one. */
export function samplingFromJson(j: unknown): SamplingProof {
  const o = j as Partial<SamplingProofJson> | null
  const ok =
    typeof o === 'object' &&
    o !== null &&
    Number.isInteger(o.index) &&
    Number.isInteger(o.token) &&
    Number.isInteger(o.vocab) &&
    typeof o.peer === 'string' &&
    typeof o.receipt === 'string' &&
    typeof o.proof === 'string' &&
    Array.isArray(o.publicSignals) &&
    o.publicSignals.every((s) => typeof s === 'string')
  if (!ok) throw new ProtocolError('ZK_MALFORMED', 'a sampling proof needs index, token, vocab, peer, receipt, proof (base64) and publicSignals')
  try {
    return {
      index: o.index!,
      token: o.token!,
      vocab: o.vocab!,
      peer: o.peer!,
      receipt: base64ToBytes(o.receipt!),
      proof: base64ToBytes(o.proof!),
      publicSignals: o.publicSignals!
    }
  } catch {
    throw new ProtocolError('ZK_MALFORMED', "a sampling proof's receipt or proof is not base64")
  }
}
