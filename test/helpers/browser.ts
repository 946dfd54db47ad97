/**
 * Debian's Chromium driven by Playwright, with the flags and permissions that make WebGPU
 * (software adapter) and tab-to-tab WebRTC work on a loopback-only host (notes/platform.md).
 */
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { REPO } from './paths.js'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const ARTIFACTS = join(REPO, 'test-artifacts')

export const hasChromium = (): boolean => existsSync(CHROMIUM)

export async function launch(): Promise<Browser> {
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-quic',
      '--enable-unsafe-webgpu',
      '--allow-loopback-in-peer-connection'
    ]
  })
}

/** A context whose pages may use WebRTC host candidates on loopback (needs the media permissions); `options` adds to Playwright's (e.g. ignoreHTTPSErrors). */
export async function context(browser: Browser, origin: string, options: BrowserContextOptions = {}): Promise<BrowserContext> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options })
  await ctx.grantPermissions(['camera', 'microphone'], { origin })
  return ctx
}

/** Saves a full-page screenshot under test-artifacts/ (kept by CI for people to look at). */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true })
  const path = join(ARTIFACTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  return path
}

/** Collects a page's console for failure messages. */
export function consoleOf(page: Page): string[] {
  const lines: string[] = []
  page.on('console', (m) => lines.push(`[${m.type()}] ${m.text()}`))
  page.on('pageerror', (e) => lines.push(`[pageerror] ${e.message}`))
  return lines
}
