import { describe, expect, it } from 'vitest'
import { pickRelayAddr } from '../../shared/route/relay-addr.js'

const P = '/p2p/12D3KooWRelay'
const ws = `/ip4/127.0.0.1/tcp/9090/ws${P}`
const wss = `/dns4/relay.example.org/tcp/443/wss${P}`
const tlsWs = `/dns4/relay.example.org/tcp/443/tls/ws${P}`
const tcp = `/ip4/127.0.0.1/tcp/9091${P}`

describe('pickRelayAddr', () => {
  it('gives an https page the TLS WebSocket address, whatever the order', () => {
    expect(pickRelayAddr([tcp, ws, wss], true)).toBe(wss)
    expect(pickRelayAddr([tlsWs, ws], true)).toBe(tlsWs)
  })
  it('gives everyone else the plain WebSocket address first, then TLS, then any', () => {
    expect(pickRelayAddr([wss, ws], false)).toBe(ws)
    expect(pickRelayAddr([tcp, wss], false)).toBe(wss)
    expect(pickRelayAddr([tcp], true)).toBe(tcp)
    expect(pickRelayAddr([], true)).toBeUndefined()
  })
})
