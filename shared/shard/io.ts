/**
 * The names a shard's ONNX graph reads and writes. Shapes (B = batch, S = new tokens,
 * P = cached tokens, T = P + S, hd = head size):
 *
 *   input_ids      int64 [B, S]          first shard only
 *   hidden_in      fp32  [B, S, dim]     other shards
 *   position_ids   int64 [B, S]          absolute positions of the new tokens
 *   past_key.L     fp32  [B, nKv, P, hd] per layer L of the shard (P may be 0)
 *   past_value.L   fp32  [B, nKv, P, hd]
 * →
 *   hidden_out     fp32  [B, S, dim]     all but the last shard
 *   logits         fp32  [B, S, vocab]   last shard only
 *   present_key.L  fp32  [B, nKv, T, hd]
 *   present_value.L
 *   layer_out.L    fp32  [B, S, dim]     the residual stream after block L (for per-layer commitments)
 */
export const INPUT_IDS = 'input_ids'
export const HIDDEN_IN = 'hidden_in'
export const POSITION_IDS = 'position_ids'
export const HIDDEN_OUT = 'hidden_out'
export const LOGITS = 'logits'
export const pastKey = (layer: number): string => `past_key.${layer}`
export const pastValue = (layer: number): string => `past_value.${layer}`
export const presentKey = (layer: number): string => `present_key.${layer}`
export const presentValue = (layer: number): string => `present_value.${layer}`
export const layerOut = (layer: number): string => `layer_out.${layer}`
