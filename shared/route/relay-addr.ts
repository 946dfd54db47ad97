/**
 * Which of a relay's multiaddrs to dial. A page served over https may open only `wss://` (mixed
 * content is refused), so a secure page takes the TLS WebSocket address first; anyone else a plain
 * WebSocket one (no TLS to pay for on loopback or a LAN), then the TLS one, then whatever there is.
 */
export function pickRelayAddr(addrs: string[], secure: boolean): string | undefined {
  const tls = addrs.find(isTlsWebSocket)
  const plain = addrs.find((a) => a.includes('/ws/') && !isTlsWebSocket(a))
  return (secure ? (tls ?? plain) : (plain ?? tls)) ?? addrs[0]
}

const isTlsWebSocket = (a: string): boolean => a.includes('/wss/') || a.includes('/tls/ws/')
