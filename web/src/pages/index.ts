/** The landing page: the header, and the SDK example pointed at this relay. */
import { byId, mountNav, relayOrigin } from './nav.js'

mountNav('home')

const example = byId('sdk-example', HTMLElement)
example.textContent = (example.textContent ?? '').replace('RELAY', relayOrigin())
