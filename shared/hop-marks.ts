/**
 * Marks in one step's life on both ends of a hop, for the network bench's anatomy of a hop in
 * place (test/bench/hop.ts): each stage timed where it really runs, after the idle gap a node of
 * a pipeline sees, not in a warm loop. Off unless a host installs a sink (the sink reads its own
 * clock, so this stays platform-free), so a step pays one check of `undefined` per mark.
 */
export type HopMark =
  | 'client:send' // the client starts the step (before encoding it)
  | 'node:read' // the node has the step's frame, decoded
  | 'node:start' // decoded and checked: compute starts
  | 'node:computed' // the shard's output, chained input
  | 'node:signed' // fingerprint and signed receipt
  | 'node:sent' // the result handed to the stream
  | 'client:reply' // the client has the result decoded (before checking the receipt)

/** `hop` is the first layer of the hop, which tells the hops of one session apart. */
export type HopMarkSink = (mark: HopMark, session: string, hop: number, step: number) => void

export let hopMark: HopMarkSink | undefined

export function useHopMarks(sink: HopMarkSink | undefined): void {
  hopMark = sink
}
