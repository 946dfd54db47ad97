import { InvalidArgumentError } from 'commander'
import bytes from 'bytes'

/** Option parsers shared by the commands: they turn bad input into a clear usage error. */
export function int(min: number) {
  return (v: string): number => {
    const n = Number(v)
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer ≥ ${min}`)
    return n
  }
}

export function float(v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n)) throw new InvalidArgumentError('expected a number')
  return n
}

export function intList(v: string): number[] {
  const ids = v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map(Number)
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new InvalidArgumentError('expected comma-separated non-negative integers, e.g. 1,2,3')
  }
  return ids
}

/** "24GB", "512MiB", "8g" → bytes (binary units, as GPU memory is sold). */
export function memory(v: string): number {
  const n = bytes.parse(v.replace(/i?b$/i, 'b'))
  if (n === null || !(n > 0)) throw new InvalidArgumentError('expected a size such as 24GB or 512MB')
  return n
}
