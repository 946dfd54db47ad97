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

const log = logger('tessera:node:frames')

export interface FrameStream {
  /** The next frame, or undefined when the stream ended between frames or was reset. */
  read(): Promise<Uint8Array | undefined>
  write(frame: Uint8Array): Promise<void>
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
  const lp = lpStream(stream, { maxDataLength: maxBytes })
  return {
    async read() {
      try {
        const frame = (await lp.read()).subarray()
        // Assumes the minimal varint prefix (what lpStream writes); a padded one would make a
        // clean end look cut short, which only earns that client an error reply it may ignore.
        consumed += varintLength(frame.byteLength) + frame.byteLength
        return frame
      } catch (err) {
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
    async write(frame) {
      await lp.write(frame)
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
