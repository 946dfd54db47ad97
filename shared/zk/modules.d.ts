/**
 * The parts of snarkjs 0.7.6 that Tessera calls (it ships no types).
 * A "file" is a path in Node, or `{ type: 'mem', data }` for bytes held in memory.
 */
declare module 'snarkjs' {
  export interface Groth16Proof {
    pi_a: string[]
    pi_b: string[][]
    pi_c: string[]
    protocol: string
    curve: string
  }
  /** Logged-to object: snarkjs reports progress through debug/info. */
  export interface SnarkLogger {
    debug(msg: string): void
    info(msg: string): void
    warn(msg: string): void
    error(msg: string): void
  }
  export interface MemFile {
    type: 'mem'
    data?: Uint8Array
  }
  export type FileRef = string | MemFile | Uint8Array
  export interface Curve {
    terminate(): Promise<void>
  }

  export const groth16: {
    verify(vk: object, publicSignals: string[], proof: Groth16Proof, logger?: SnarkLogger): Promise<boolean>
    prove(zkey: FileRef, witness: FileRef, logger?: SnarkLogger): Promise<{ proof: Groth16Proof; publicSignals: string[] }>
  }
  export const wtns: {
    calculate(input: Record<string, unknown>, wasm: FileRef, witness: FileRef, logger?: SnarkLogger): Promise<void>
  }
  export const powersOfTau: {
    newAccumulator(curve: Curve, power: number, file: string, logger?: SnarkLogger): Promise<unknown>
    contribute(oldFile: string, newFile: string, name: string, entropy: string, logger?: SnarkLogger): Promise<unknown>
    preparePhase2(oldFile: string, newFile: string, logger?: SnarkLogger): Promise<void>
  }
  export const zKey: {
    newZKey(r1cs: string, ptau: string, zkey: string, logger?: SnarkLogger): Promise<unknown>
    contribute(oldFile: string, newFile: string, name: string, entropy: string, logger?: SnarkLogger): Promise<unknown>
    exportVerificationKey(zkey: FileRef, logger?: SnarkLogger): Promise<Record<string, unknown>>
  }
  export const curves: {
    getCurveFromName(name: string, singleThread?: boolean): Promise<Curve>
  }
}
