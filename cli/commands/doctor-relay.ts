/**
 * `tessera doctor --relay`: can this machine reach the relay, how far away is it, and does it
 * offer what a node needs (announcements, circuit relay v2).
 */
import { TesseraError } from '../../shared/errors.js'
import { DOCTOR_DEFAULTS } from '../config.js'
import { msg, type Check } from './doctor-checks.js'

const { relayDeadlineMs, pings } = DOCTOR_DEFAULTS
const HOP_PROTOCOL = '/libp2p/circuit/relay/0.2.0/hop'

/**
 * Dials the relay from a throwaway libp2p node and pings it. The relay offers no bandwidth
 * protocol, so only round trips are measured here; throughput shows on the first inference.
 * libp2p is imported lazily so other commands do not pay for it.
 */
export async function probeRelay(addr: string): Promise<Check[]> {
  const { multiaddr } = await import('@multiformats/multiaddr')
  let ma
  try {
    ma = multiaddr(addr)
  } catch (err) {
    const fix = 'give the address the relay prints at start-up, e.g. /ip4/203.0.113.7/tcp/9090/ws/p2p/12D3Koo…'
    return [{ name: 'relay', status: 'fail', value: `${addr} is not a multiaddr (${msg(err)})`, fix }]
  }
  const [{ createLibp2p }, { webSockets }, { tcp }, { noise }, { yamux }, { identify }, { ping }, { ANNOUNCE_PROTOCOL }] = await Promise.all([
    import('libp2p'),
    import('@libp2p/websockets'),
    import('@libp2p/tcp'),
    import('@chainsafe/libp2p-noise'),
    import('@chainsafe/libp2p-yamux'),
    import('@libp2p/identify'),
    import('@libp2p/ping'),
    import('../../shared/protocol/capability.js')
  ])
  const node = await createLibp2p({
    transports: [webSockets(), tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ping: ping() }
  })
  // A ref'd timer: AbortSignal.timeout() is unref'd and would let the process exit mid-dial.
  const ctl = new AbortController()
  const timer = setTimeout(() => ctl.abort(new TesseraError('TIMEOUT', 'timed out')), relayDeadlineMs)
  const signal = ctl.signal
  const checks: Check[] = []
  try {
    const t0 = performance.now()
    const conn = await bounded(node.dial(ma, { signal }), signal)
    const connectMs = performance.now() - t0
    const rtts: number[] = []
    let pingError: unknown
    try {
      for (let i = 0; i < pings; i++) rtts.push(await bounded(node.services.ping.ping(conn.remotePeer, { signal }), signal))
    } catch (err) {
      pingError = err
    }
    const bandwidth = 'bandwidth is not measured here (the relay offers no bandwidth protocol); it shows on the first inference'
    if (rtts.length === 0) {
      const value = `connected in ${connectMs.toFixed(0)} ms, but it does not answer ping (${msg(pingError)}); ${bandwidth}`
      checks.push({ name: 'relay', status: 'warn', value, fix: 'enable the ping service on the relay' })
    } else {
      const sorted = [...rtts].sort((a, b) => a - b)
      const rtt = `ping round trip ${sorted[sorted.length >> 1]} ms median, ${sorted[0]} ms best of ${rtts.length}`
      checks.push({ name: 'relay', status: 'ok', value: `connected in ${connectMs.toFixed(0)} ms; ${rtt}; ${bandwidth}` })
    }
    const protocols = await bounded(node.services.identify.identify(conn, { signal }), signal).then(
      (r) => r.protocols,
      () => undefined
    )
    if (protocols === undefined) {
      checks.push({ name: 'relay protocols', status: 'warn', value: 'the relay did not identify itself', fix: 'is this a Tessera relay? check the address' })
    } else {
      const missing = [ANNOUNCE_PROTOCOL, HOP_PROTOCOL].filter((p) => !protocols.includes(p))
      checks.push(
        missing.length === 0
          ? { name: 'relay protocols', status: 'ok', value: 'offers node announcements and circuit relay v2' }
          : {
              name: 'relay protocols',
              status: 'warn',
              value: `does not offer ${missing.join(', ')}`,
              fix: 'nodes cannot announce or be reached through it: point --relay at a Tessera relay'
            }
      )
    }
  } catch (err) {
    const port = ma.getComponents().find((c) => c.name === 'tcp' || c.name === 'udp')?.value ?? '?'
    checks.push({
      name: 'relay',
      status: 'fail',
      value: `cannot reach ${addr}: ${signal.aborted ? `no answer within ${relayDeadlineMs / 1000} s (${msg(err)})` : msg(err)}`,
      fix:
        'check that the relay runs, that the address (and its /p2p/ peer id) is the one it prints at start-up, ' +
        `and that no firewall blocks port ${port} from here`
    })
  } finally {
    clearTimeout(timer)
    await bounded(Promise.resolve(node.stop()), AbortSignal.timeout(2000)).catch(() => {})
  }
  return checks
}

/** Settles with `p`, or rejects when `signal` aborts even if `p` ignores the signal. */
async function bounded<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  p.catch(() => {})
  if (signal.aborted) throw signal.reason
  return await new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(resolve, reject).finally(() => {
      signal.removeEventListener('abort', onAbort)
    })
  })
}
