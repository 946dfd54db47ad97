/**
 * Text as it streams: token ids in, text deltas out, such that the deltas joined are exactly the
 * decode of all the ids, and OpenAI's `stop` strings end it (the stop string itself not shown).
 */

export interface Decoder {
  decode(ids: number[]): string
}

/**
 * Incremental decoding over a window, as Hugging Face's text-generation-inference does: decode
 * the ids since `prefix` twice, without and with the new ones, and emit what the new ones added.
 * The window keeps decoding cheap on long answers, and decoding a little history with it keeps
 * what depends on neighbours right (SentencePiece's leading space, byte-level merges). One token
 * may carry half of a UTF-8 character (byte-fallback or byte-level tokens): while the text ends in
 * U+FFFD the new ids are held until a later one completes it.
 */
export class IncrementalDecoder {
  private readonly ids: number[] = []
  private prefix = 0
  private read = 0

  constructor(private readonly tok: Decoder) {}

  push(id: number): string {
    this.ids.push(id)
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read))
    const after = this.tok.decode(this.ids.slice(this.prefix))
    if (after.length <= before.length || after.endsWith('\uFFFD')) return ''
    this.prefix = this.read
    this.read = this.ids.length
    return after.slice(before.length)
  }

  /** What is still held back (a character cut short when the generation ended). */
  flush(): string {
    if (this.read === this.ids.length) return ''
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read))
    const after = this.tok.decode(this.ids.slice(this.prefix))
    this.prefix = this.read
    this.read = this.ids.length
    return after.slice(before.length)
  }
}

/**
 * Text deltas with stop strings applied. What could still become a stop string is held back, so
 * no part of one is ever shown; once one appears, the text ends just before it and `stopped`
 * turns true. Without a tokenizer the "text" is the ids, space-separated.
 */
export class TextStream {
  /** Everything emitted so far. */
  text = ''
  stopped = false
  private pending = ''
  private readonly decoder?: IncrementalDecoder
  private count = 0

  constructor(
    tok: Decoder | undefined,
    private readonly stops: string[] = []
  ) {
    if (tok !== undefined) this.decoder = new IncrementalDecoder(tok)
  }

  /** The text `id` adds ('' while held back, and after a stop). */
  push(id: number): string {
    if (this.stopped) return ''
    const piece = this.decoder === undefined ? (this.count === 0 ? String(id) : ` ${id}`) : this.decoder.push(id)
    this.count++
    return this.emit(piece, false)
  }

  /** The end of the generation: whatever was held back (unless a stop string ended it). */
  end(): string {
    if (this.stopped) return ''
    return this.emit(this.decoder?.flush() ?? '', true)
  }

  private emit(piece: string, last: boolean): string {
    const text = this.pending + piece
    let cut = -1
    for (const s of this.stops) {
      const at = text.indexOf(s)
      if (at >= 0 && (cut < 0 || at < cut)) cut = at
    }
    if (cut >= 0) {
      this.stopped = true
      this.pending = ''
      return this.out(text.slice(0, cut))
    }
    const hold = last ? 0 : this.heldBack(text)
    this.pending = text.slice(text.length - hold)
    return this.out(text.slice(0, text.length - hold))
  }

  /** Length of the longest end of `text` that begins some stop string. */
  private heldBack(text: string): number {
    let best = 0
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
        if (text.endsWith(s.slice(0, n))) {
          best = n
          break
        }
      }
    }
    return best
  }

  private out(s: string): string {
    this.text += s
    return s
  }
}
