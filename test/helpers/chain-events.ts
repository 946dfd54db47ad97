/** A TesseraStake deployment's own events, read straight from the chain (not through the ledger under test). */
import { createPublicClient, http, type Abi } from 'viem'
import { stakeArtifact } from '../../relay/chain/compile.js'
import type { Deployment } from '../../relay/chain/deploy.js'

export interface ContractEvent {
  eventName: string
  args: Record<string, unknown>
}

/** Every event of the contract at `d` since its deploy block, in chain order, from the node at `rpcUrl`. */
export async function contractEvents(rpcUrl: string, d: Pick<Deployment, 'stakeAddress' | 'deployBlock'>): Promise<ContractEvent[]> {
  const abi: Abi = (await stakeArtifact()).abi
  return (await createPublicClient({ transport: http(rpcUrl, { retryCount: 0 }) }).getContractEvents({
    address: d.stakeAddress,
    abi,
    fromBlock: BigInt(d.deployBlock)
  })) as unknown as ContractEvent[]
}
