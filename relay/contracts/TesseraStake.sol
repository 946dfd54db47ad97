// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/**
 * Tessera's settlement ledger on an EVM chain: stakes, slashes, rewards and the facts the
 * off-chain reputation is computed from.
 *
 * Peers are `bytes32 peer = keccak256(bytes(libp2p peer id string))`; `label(id)` publishes the
 * string once (hashed here, so nobody can mislabel a peer) and lets any reader rebuild the audit
 * log with readable ids. Amounts are wei; the TypeScript side maps one ledger unit to
 * WEI_PER_UNIT (1e15 wei, relay/ledger-evm.ts).
 *
 * Trust: receipts are Ed25519-signed and compared by activation fingerprints; neither is
 * feasible on chain (no Ed25519 precompile, floating-point comparisons), so `slash`, `reject` and
 * `observe` are callable only by an arbiter: an operator that re-checks the evidence off-chain.
 * A federation of relays that do not trust each other admits each relay's key as an arbiter; a
 * slash on receipt evidence takes effect once `threshold` distinct arbiters approved the same
 * accusation (peer, kind, reporter) of the same evidence. The evidence itself is published on
 * chain (`publishEvidence`), so every arbiter re-checks it before approving, and anyone can audit
 * it after. With one arbiter and a threshold of 1 this is the single operator's ledger. Every
 * call leaves an event, so the arbiters' decisions are public and auditable.
 * `slashByProof` narrows that trust for ZK models: the fault itself (the true output differs from
 * the claimed one) is proven on chain by a Groth16 counter-proof; only the binding of the claim
 * (input and output hashes) to the accused's signed reply is the arbiter's attestation.
 *
 * Rewards go only to a reporter `bound` to an address by its own peer key: the arbiter verifies
 * the peer's Ed25519 signature of "tessera-bind:<peer id>:<address>:<chain id>:<contract>"
 * off-chain and calls `bind`, which also makes that address the owner. Anyone may fund a peer
 * id, but funding one gives no claim on the rewards it earns: an unbound, unstaked or blacklisted
 * reporter's share is burned, as is the share of `reporter == 0` (the arbiter's "pay no one").
 * Stake the arbiter sends is a grant: slashable, never withdrawable by the peer's owner.
 */
contract TesseraStake {
    struct Peer {
        uint256 stake;
        uint256 pending; // requested for withdrawal; still slashable until withdrawn
        address owner; // first funder: the only one who may withdraw
        uint64 pendingAt; // when the pending withdrawal was requested
        uint32 slashed;
        bool blacklisted;
        bool bound; // owner set by the arbiter from the peer key's signed binding: only then are rewards paid
        uint256 granted; // the arbiter's share of `stake`: slashable, not withdrawable
    }

    struct ZkModel {
        address verifier;
        uint256 weightCommitment;
        uint16 outputs; // public signals: outputs first, then the weight commitment, then the input (or its hash)
        uint16 signals;
        bytes4 selector; // verifyProof(uint256[2],uint256[2][2],uint256[2],uint256[signals])
    }

    uint256 private constant BPS = 10_000;

    mapping(address => bool) public isArbiter;
    uint16 public immutable arbiterCount;
    /** Distinct arbiters whose approvals a slash on receipt evidence needs. */
    uint16 public immutable threshold;
    uint16 public immutable slashBps;
    uint16 public immutable rewardBps;
    uint32 public immutable blacklistAfterSlashes;
    uint64 public immutable withdrawDelay;

    mapping(bytes32 => Peer) public peers;
    mapping(bytes32 => bool) public evidenceUsed;
    mapping(bytes32 => ZkModel) public zkModels;
    /** Per evidence: what the first approval accused (keccak256 of peer, kind, reporter), the approvals so far, and by whom. */
    mapping(bytes32 => bytes32) public proposals;
    mapping(bytes32 => uint16) public approvals;
    mapping(bytes32 => mapping(address => bool)) public approvedBy;
    /** Each arbiter's part of a peer's grant: what it alone may reclaim. */
    mapping(bytes32 => mapping(address => uint256)) public grants;
    /** Slashed wei not paid to reporters: kept in the contract, never withdrawable. */
    uint256 public burned;

    error NotArbiter();
    error NotOwner();
    error ZeroAmount();
    error BadParameters();
    error EvidenceUsed(bytes32 evidenceId);
    error NothingStaked();
    error NoPendingWithdrawal();
    error WithdrawTooEarly(uint256 availableAt);
    error TransferFailed();
    error UnknownModel(bytes32 model);
    error WrongModel();
    error WrongInput();
    error BadSignals(uint256 expected, uint256 got);
    error ProofRejected();
    error NoFault();
    error AlreadyApproved(bytes32 evidenceId);
    error ProposalMismatch(bytes32 evidenceId);

    event Labeled(bytes32 indexed peer, string id);
    event Bound(bytes32 indexed peer, address owner);
    event Staked(bytes32 indexed peer, address indexed funder, uint256 amount, uint256 total);
    event WithdrawRequested(bytes32 indexed peer, uint256 amount, uint256 availableAt);
    event Withdrawn(bytes32 indexed peer, address indexed to, uint256 amount, uint256 total);
    event Slashed(bytes32 indexed peer, bytes32 indexed evidenceId, uint8 kind, uint256 amount, uint256 reward, bytes32 reporter, string reason);
    event Rewarded(bytes32 indexed peer, bytes32 indexed evidenceId, bytes32 accused, uint256 amount, uint256 total);
    event Blacklisted(bytes32 indexed peer, uint32 slashed);
    event Observed(bytes32 indexed peer, bool ok);
    event Rejected(bytes32 indexed peer, bytes32 indexed evidenceId, uint8 kind, bytes32 reporter, string reason);
    event ArbiterAdmitted(address indexed arbiter);
    event EvidencePublished(bytes32 indexed evidenceId, address indexed arbiter, bytes evidence);
    event Approved(bytes32 indexed peer, bytes32 indexed evidenceId, address indexed arbiter, uint16 approvals, uint16 threshold);
    event ZkModelRegistered(bytes32 indexed model, address verifier, uint256 weightCommitment, uint16 outputs, uint16 signals);

    modifier onlyArbiter() {
        if (!isArbiter[msg.sender]) revert NotArbiter();
        _;
    }

    constructor(address[] memory arbiters_, uint16 threshold_, uint16 slashBps_, uint16 rewardBps_, uint32 blacklistAfterSlashes_, uint64 withdrawDelay_) {
        uint256 n = arbiters_.length;
        if (n == 0 || n > type(uint16).max || threshold_ == 0 || threshold_ > n) revert BadParameters();
        if (slashBps_ > BPS || rewardBps_ > BPS || blacklistAfterSlashes_ == 0) revert BadParameters();
        for (uint256 i = 0; i < n; i++) {
            address a = arbiters_[i];
            if (a == address(0) || isArbiter[a]) revert BadParameters();
            isArbiter[a] = true;
            emit ArbiterAdmitted(a);
        }
        arbiterCount = uint16(n);
        threshold = threshold_;
        slashBps = slashBps_;
        rewardBps = rewardBps_;
        blacklistAfterSlashes = blacklistAfterSlashes_;
        withdrawDelay = withdrawDelay_;
    }

    /** Publishes the peer id behind a hash; anyone may, the hash is computed here. */
    function label(string calldata id) external returns (bytes32 peer) {
        peer = keccak256(bytes(id));
        emit Labeled(peer, id);
    }

    function stake(bytes32 peer) external payable {
        if (msg.value == 0) revert ZeroAmount();
        Peer storage p = peers[peer];
        // An arbiter's stake is a grant it keeps locked in. Anyone else funding an ownerless peer owns it
        // until the peer's key binds another address; that gives back only what they staked (rewards need `bound`).
        if (isArbiter[msg.sender]) {
            p.granted += msg.value;
            grants[peer][msg.sender] += msg.value;
        } else if (p.owner == address(0)) p.owner = msg.sender;
        p.stake += msg.value;
        emit Staked(peer, msg.sender, msg.value, p.stake);
    }

    /**
     * Binds a peer to the address its key signed for (the arbiter verified the Ed25519 signature
     * off-chain): that address owns it from now on, over whoever funded it first, and it may be paid rewards.
     */
    function bind(bytes32 peer, address owner) external onlyArbiter {
        if (owner == address(0)) revert BadParameters();
        Peer storage p = peers[peer];
        p.owner = owner;
        p.bound = true;
        emit Bound(peer, owner);
    }

    /** What the owner may withdraw: the stake less the arbiter's grant. */
    function withdrawable(bytes32 peer) public view returns (uint256) {
        Peer storage p = peers[peer];
        return p.stake > p.granted ? p.stake - p.granted : 0;
    }

    /** An arbiter takes back what is left of its own grant (e.g. a peer that left): at once, it could slash it anyway. */
    function reclaimGrant(bytes32 peer, uint256 amount) external onlyArbiter {
        Peer storage p = peers[peer];
        if (amount == 0) revert ZeroAmount();
        if (amount > p.granted || amount > grants[peer][msg.sender]) revert NothingStaked();
        grants[peer][msg.sender] -= amount;
        p.granted -= amount;
        p.stake -= amount;
        emit Withdrawn(peer, msg.sender, amount, p.stake);
        (bool ok, ) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /** Starts the delay; a new request replaces the pending one (and restarts the clock). */
    function requestWithdraw(bytes32 peer, uint256 amount) external {
        Peer storage p = peers[peer];
        if (msg.sender != p.owner) revert NotOwner();
        if (amount == 0) revert ZeroAmount();
        if (amount > withdrawable(peer)) revert NothingStaked();
        p.pending = amount;
        p.pendingAt = uint64(block.timestamp);
        emit WithdrawRequested(peer, amount, block.timestamp + withdrawDelay);
    }

    /** Pays out the pending amount, or what slashes left of it. */
    function withdraw(bytes32 peer) external {
        Peer storage p = peers[peer];
        if (msg.sender != p.owner) revert NotOwner();
        if (p.pending == 0) revert NoPendingWithdrawal();
        uint256 availableAt = uint256(p.pendingAt) + withdrawDelay;
        if (block.timestamp < availableAt) revert WithdrawTooEarly(availableAt);
        uint256 free = withdrawable(peer);
        uint256 amount = p.pending < free ? p.pending : free;
        if (amount == 0) revert NothingStaked();
        p.pending = 0;
        p.stake -= amount;
        emit Withdrawn(peer, msg.sender, amount, p.stake);
        (bool ok, ) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /**
     * Puts the evidence on chain for every arbiter (and anyone) to re-check: its bytes are what the
     * off-chain checker reads (CBOR of the evidence and its reporter); `evidenceId` is its hash there.
     */
    function publishEvidence(bytes32 evidenceId, bytes calldata evidence) external onlyArbiter {
        emit EvidencePublished(evidenceId, msg.sender, evidence);
    }

    /**
     * An arbiter re-checked signed receipts off-chain and found `peer` at fault: one approval. The
     * slash happens at the `threshold`-th distinct approval of the same accusation; an approval that
     * names another peer, kind or reporter for the same evidence is refused.
     */
    function slash(bytes32 peer, bytes32 evidenceId, uint8 kind, bytes32 reporter, string calldata reason) external onlyArbiter {
        // One arbiter's word is the rule: no approvals to keep (the single operator's ledger costs what it did).
        if (threshold == 1) return _slash(peer, evidenceId, kind, reporter, reason);
        if (evidenceUsed[evidenceId]) revert EvidenceUsed(evidenceId);
        if (approvedBy[evidenceId][msg.sender]) revert AlreadyApproved(evidenceId);
        bytes32 accusation = keccak256(abi.encode(peer, kind, reporter));
        bytes32 first = proposals[evidenceId];
        if (first == bytes32(0)) proposals[evidenceId] = accusation;
        else if (first != accusation) revert ProposalMismatch(evidenceId);
        approvedBy[evidenceId][msg.sender] = true;
        uint16 n = approvals[evidenceId] + 1;
        approvals[evidenceId] = n;
        emit Approved(peer, evidenceId, msg.sender, n, threshold);
        if (n >= threshold) _slash(peer, evidenceId, kind, reporter, reason);
    }

    /** Evidence the arbiter refused: changes nothing, but keeps the refusal in the public record. */
    function reject(bytes32 peer, bytes32 evidenceId, uint8 kind, bytes32 reporter, string calldata reason) external onlyArbiter {
        emit Rejected(peer, evidenceId, kind, reporter, reason);
    }

    /** A verified good or failed result; reputation is the EMA of these, computed off-chain. */
    function observe(bytes32 peer, bool ok) external onlyArbiter {
        emit Observed(peer, ok);
    }

    function registerZkModel(bytes32 model, address verifier, uint256 weightCommitment, uint16 outputs, uint16 signals) external onlyArbiter {
        if (verifier.code.length == 0 || outputs == 0 || signals <= outputs + 1) revert BadParameters();
        bytes4 selector = bytes4(keccak256(abi.encodePacked("verifyProof(uint256[2],uint256[2][2],uint256[2],uint256[", _itoa(signals), "])")));
        zkModels[model] = ZkModel(verifier, weightCommitment, outputs, signals, selector);
        emit ZkModelRegistered(model, verifier, weightCommitment, outputs, signals);
    }

    /**
     * A ZK fault proven on chain, by one arbiter whatever the threshold: the fault is the proof's. The arbiter attests what the accused claimed (keccak256 of its
     * output signals and of its input signals, from its signed reply); the counter-proof, from an
     * honest prover, must verify for the registered weights and the same input, and prove another
     * output. The circuit is deterministic, so two outputs for one input and one set of weights
     * mean the accused's is wrong.
     */
    function slashByProof(
        bytes32 peer,
        bytes32 evidenceId,
        bytes32 model,
        bytes32 claimedOutputHash,
        bytes32 claimedInputHash,
        uint256[2] calldata a,
        uint256[2][2] calldata b,
        uint256[2] calldata c,
        uint256[] calldata signals,
        bytes32 reporter
    ) external onlyArbiter {
        ZkModel storage m = zkModels[model];
        if (m.verifier == address(0)) revert UnknownModel(model);
        if (signals.length != m.signals) revert BadSignals(m.signals, signals.length);
        if (signals[m.outputs] != m.weightCommitment) revert WrongModel();
        if (keccak256(abi.encodePacked(signals[m.outputs + 1:])) != claimedInputHash) revert WrongInput();
        if (!_verify(m, a, b, c, signals)) revert ProofRejected();
        if (keccak256(abi.encodePacked(signals[:m.outputs])) == claimedOutputHash) revert NoFault();
        _slash(peer, evidenceId, 5, reporter, "counter-proof verified on chain: the claimed output is not the model's");
    }

    /** snarkjs's verifier takes a fixed-size uint[N] and RETURNS false on a bad proof: call it raw and require true. */
    function _verify(ZkModel storage m, uint256[2] calldata a, uint256[2][2] calldata b, uint256[2] calldata c, uint256[] calldata signals) private view returns (bool) {
        bytes memory data = bytes.concat(abi.encodeWithSelector(m.selector, a, b, c), abi.encodePacked(signals));
        (bool ok, bytes memory ret) = m.verifier.staticcall(data);
        return ok && ret.length == 32 && abi.decode(ret, (bool));
    }

    function _slash(bytes32 peer, bytes32 evidenceId, uint8 kind, bytes32 reporter, string memory reason) private {
        if (evidenceUsed[evidenceId]) revert EvidenceUsed(evidenceId);
        evidenceUsed[evidenceId] = true;
        Peer storage p = peers[peer];
        // A peer with nothing staked is still slashed: the count (and the blacklist) must move.
        uint256 amount = (p.stake * slashBps) / BPS;
        uint256 reward = (amount * rewardBps) / BPS;
        p.stake -= amount;
        if (p.granted > p.stake) p.granted = p.stake;
        p.slashed += 1;
        // Paid only to a bound reporter with standing (staked, not blacklisted); otherwise burned with the rest.
        Peer storage r = peers[reporter];
        if (reporter == bytes32(0) || reporter == peer || !r.bound || r.blacklisted || r.stake == 0) reward = 0;
        burned += amount - reward;
        emit Slashed(peer, evidenceId, kind, amount, reward, reporter, reason);
        if (reward > 0) {
            r.stake += reward;
            emit Rewarded(reporter, evidenceId, peer, reward, r.stake);
        }
        if (!p.blacklisted && p.slashed >= blacklistAfterSlashes) {
            p.blacklisted = true;
            emit Blacklisted(peer, p.slashed);
        }
    }

    function _itoa(uint256 v) private pure returns (bytes memory s) {
        if (v == 0) return "0";
        while (v > 0) {
            s = abi.encodePacked(bytes1(uint8(48 + (v % 10))), s);
            v /= 10;
        }
    }
}
