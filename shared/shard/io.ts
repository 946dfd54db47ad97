/**
 * The names a shard's ONNX graph reads and writes. Shapes (B = batch, S = new tokens,
 * P = cached tokens, T = P + S, hd = head size):
 *
 *   input_ids      int64 [B, S]          first shard only
 *   hidden_in      fp32  [B, S, dim]     other shards
 *   position_ids   int64 [B, S]          absolute positions of the new tokens
 *   past_key.L     fp32  [B, nKv, P, hd] per layer L of the shard (P may be 0)
 *   past_value.L   fp32  [B, nKv, P, hd]
 *
 * Graphs built with `kv: 'append'` read the past from a buffer of some capacity C ≥ P, of which
 * the first P = position_ids[0] rows count, and return only the step's new rows (new_key.L,
 * new_value.L [B, nKv, S, hd]) for the runtime to append: no copy of the cache in or out.
 *
 * Graphs built with `kv: 'gqa'` (GroupQueryAttention) hold the cache in a buffer of some
 * capacity C ≥ T instead, of which each row's first `seqlens_k + 1 − S` positions are the past:
 *
 *   past_key.L     fp32  [B, nKv, C, hd]  the runtime's buffer; present_key.L is the same buffer
 *   seqlens_k      int32 [B]              T − 1 per row (the cache's length after this step, − 1)
 *   total_sequence_length int32 []       T (the longest row's)
 * →
 *   hidden_out     fp32  [B, S, dim]     all but the last shard
 *   logits         fp32  [B, S, vocab]   last shard only
 *   present_key.L  fp32  [B, nKv, T, hd]  (gqa: [B, nKv, max(T, C), hd], written in place where it can be)
 *   present_value.L
 *   layer_out.L    fp32  [B, S, dim]     the residual stream after block L (for per-layer commitments)
 */
export const INPUT_IDS = 'input_ids'
export const HIDDEN_IN = 'hidden_in'
export const POSITION_IDS = 'position_ids'
export const SEQLENS_K = 'seqlens_k'
export const TOTAL_SEQUENCE_LENGTH = 'total_sequence_length'
export const HIDDEN_OUT = 'hidden_out'
export const LOGITS = 'logits'
export const pastKey = (layer: number): string => `past_key.${layer}`
export const pastValue = (layer: number): string => `past_value.${layer}`
export const presentKey = (layer: number): string => `present_key.${layer}`
export const presentValue = (layer: number): string => `present_value.${layer}`
export const layerOut = (layer: number): string => `layer_out.${layer}`
/** `append` graphs: the step's own keys and values [B, nKv, S, hd], which the runtime appends to its buffer. */
export const newKey = (layer: number): string => `new_key.${layer}`
export const newValue = (layer: number): string => `new_value.${layer}`
