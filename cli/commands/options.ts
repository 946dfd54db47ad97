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

/** "24GB", "512MiB", "1.5GiB", "8g" → bytes (binary units, as GPU memory is sold). */
export function memory(v: string): number {
  const s = v.trim()
  // A bare number is nearly always a forgotten unit (24 meaning 24 GB), never a sensible budget in bytes.
  if (/^\d+(\.\d+)?$/.test(s)) throw new InvalidArgumentError(`give a unit, e.g. ${s}GB (a bare number would be ${s} bytes)`)
  // bytes wants "gb": accept "GiB" and a bare "g" as well (bytes would read "8g" as 8 bytes).
  const m = /^(\d+(?:\.\d+)?) *([kmgtp])(?:i?b)?$/i.exec(s)
  const n = m !== null ? bytes.parse(`${m[1]}${m[2]}b`) : /^\d+(\.\d+)? *b$/i.test(s) ? bytes.parse(s) : null
  if (n === null || !(n > 0)) throw new InvalidArgumentError('expected a size such as 24GB or 512MB')
  return n
}

/** A flag given more than once (`--relay A --relay B`): every value, in order. */
export function repeated(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), v]
}
