/**
 * Length-prefixed frames on a session's stream (/tessera/infer/1.0.0). A read ends in one of
 * three ways, told apart by what arrived rather than by libp2p's message text: a frame, the
 * client going away between frames (nothing to answer), or a frame that is malformed or cut
 * short (a ProtocolError, which serve.ts answers if the stream still takes a reply).
 */
import { InvalidDataLengthError, InvalidDataLengthLengthError, InvalidMessageLengthError, lpStream, UnexpectedEOFError } from '@libp2p/utils'
import type { Stream } from '@libp2p/interface'
import { ProtocolError } from '../errors.js'
import { logger } from '../log.js'
import { lpLimits } from '../protocol/limits.js'

const log = logger('tessera:node:frames')

export interface FrameStream {
  /**
   * The next frame, or undefined when the stream ended between frames or was reset. An aborted
   * `signal` throws its reason (serve.ts aborts with the EXPIRED error of an idle session).
   */
  read(signal?: AbortSignal): Promise<Uint8Array | undefined>
  /** Throws the signal's reason too if the client stops taking data (a full window) until it aborts. */
  write(frame: Uint8Array, signal?: AbortSignal): Promise<void>
}

export function frameStream(stream: Stream, maxBytes: number): FrameStream {
  // Bytes the client sent vs. bytes of the whole frames read so far: when the stream ends, any
  // difference is the start of a frame that never finished. Listening before lpStream does
  // sees every byte (the stream hands buffered data to all 'message' listeners).
  let received = 0
  let consumed = 0
  stream.addEventListener('message', (evt) => {
    received += evt.data.byteLength
  })
  // lpStream's own varint reader keeps asking for bytes while every one has its continuation bit
  // set: endless 0xff would grow the prefix buffer and never get a reply. This one gives up at
  // the longest prefix a length within the limit needs, and says how long the prefix it read was.
  const maxPrefix = varintLength(maxBytes)
  let prefix = 0
  const lengthDecoder = (buf: { byteLength: number; get: (i: number) => number }): number => {
    let n = 0
    for (let i = 0; i < buf.byteLength; i++) {
      if (i >= maxPrefix) throw new ProtocolError('MALFORMED', `bad length prefix: more than ${maxPrefix} bytes (messages are at most ${maxBytes} bytes)`)
      const b = buf.get(i)
      n += (b & 0x7f) * 2 ** (7 * i)
      if ((b & 0x80) === 0) {
        prefix = i + 1
        return n
      }
    }
    throw new RangeError('length prefix incomplete') // lpStream reads one more byte
  }
  const lp = lpStream(stream, { ...lpLimits(maxBytes), lengthDecoder })
  return {
    async read(signal) {
      try {
        const frame = (await lp.read({ signal })).subarray()
        consumed += prefix + frame.byteLength
        return frame
      } catch (err) {
        if (signal?.aborted === true) throw signal.reason
        if (err instanceof ProtocolError) throw err
        if (err instanceof InvalidDataLengthError) throw new ProtocolError('TOO_LARGE', `message exceeds ${maxBytes} bytes; send the prefill in smaller steps`)
        if (err instanceof InvalidMessageLengthError || err instanceof InvalidDataLengthLengthError) {
          throw new ProtocolError('MALFORMED', `bad length prefix: ${err.message}`)
        }
        if (err instanceof UnexpectedEOFError && received > consumed) {
          throw new ProtocolError('MALFORMED', `truncated message: ${received - consumed} bytes of a frame arrived, then the stream ended`)
        }
        log.debug(`read ended: ${(err as Error).name}: ${(err as Error).message}`)
        return undefined
      }
    },
    async write(frame, signal) {
      try {
        await lp.write(frame, { signal })
      } catch (err) {
        throw signal?.aborted === true ? signal.reason : err
      }
    }
  }
}

/** Bytes of the unsigned varint (LEB128) prefix for a length of `n`. */
function varintLength(n: number): number {
  let bytes = 1
  while (n >= 128) {
    n = Math.floor(n / 128)
    bytes++
  }
  return bytes
}
