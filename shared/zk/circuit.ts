/**
 * circom source for a quantized model's shape (see layout.ts for the packing it relies on).
 *
 * Signals:
 *   private  w<l>[inputs][groups], b<l>[groups]   packed weights and biases of layer l
 *   public   x[inputs]                             the int8 input (private when committed)
 *   outputs  y[outputs]                            the last layer's int32 accumulators
 *            weights                               Poseidon commitment to every packed element
 *            inputHash                             only when the input is committed
 * snarkjs lists public signals as outputs first, then public inputs: y…, weights, [inputHash], [x…].
 *
 * Costs per layer: one constraint per (input, group) product, one per accumulator bit, four per
 * hidden neuron for the clamp; plus 8 per input (int8 range check) and ~41 per committed
 * element (Poseidon with 16 inputs: 612 constraints; a chain link absorbs 15).
 */
import { sha256Hex } from '../hash.js'
import { groupSize, layout, type LayerLayout, type ZkShape } from './layout.js'

/** Versions the generated source is written for; part of the source, hence of its hash. */
export const CIRCOM_VERSION = '2.2.3'
export const CIRCOMLIB_VERSION = '2.0.5'

/** Poseidon over any number of field elements (the circuits' side of commit.ts's chainHash). */
export const CHAIN_HASH = `// Poseidon of the first 16 elements, then Poseidon(digest, next 15) until all are absorbed:
// the chain shared/zk/commit.ts computes.
template ChainHash(n) {
    signal input in[n];
    signal output out;
    var first = n < 16 ? n : 16;
    var links = (n - first + 14) \\ 15;
    component head = Poseidon(first);
    for (var i = 0; i < first; i++) head.inputs[i] <== in[i];
    signal digest[links + 1];
    digest[0] <== head.out;
    component link[links];
    for (var c = 0; c < links; c++) {
        var at = first + 15 * c;
        var size = n - at < 15 ? n - at : 15;
        link[c] = Poseidon(size + 1);
        link[c].inputs[0] <== digest[c];
        for (var i = 0; i < size; i++) link[c].inputs[i + 1] <== in[at + i];
        digest[c + 1] <== link[c].out;
    }
    out <== digest[links];
}
`

/** Templates every model uses; main is generated below them. */
const TEMPLATES = `
// x ∈ [-128, 127], proved by 8 bits of x + 128.
template Int8() {
    signal input in;
    component bits = Num2Bits(8);
    bits.in <== in + 128;
}

${CHAIN_HASH}
// acc[g] = Σ_j w[j][g] · x[j] + b[g]: each product multiplies a packed column by one input,
// doing one multiply-accumulate per slot at once.
template PackedDense(nIn, groups) {
    signal input x[nIn];
    signal input w[nIn][groups];
    signal input b[groups];
    signal output acc[groups];
    signal prod[nIn][groups];
    for (var g = 0; g < groups; g++) {
        var sum = b[g];
        for (var j = 0; j < nIn; j++) {
            prod[j][g] <== w[j][g] * x[j];
            sum += prod[j][g];
        }
        acc[g] <== sum;
    }
}

// The n slots of a packed accumulator, each shifted up by \`offset\`, as k bits apiece. The
// decomposition of n·k ≤ 253 bits is unique, so each slot is range-checked by it.
template Unpack(n, k, offset) {
    signal input in;
    signal output bits[n][k];
    var shifted = 0;
    for (var i = 0; i < n; i++) shifted += offset * 2 ** (k * i);
    component nb = Num2Bits(n * k);
    nb.in <== in + shifted;
    for (var i = 0; i < n; i++) {
        for (var t = 0; t < k; t++) bits[i][t] <== nb.out[k * i + t];
    }
}

// A hidden neuron. bits are those of v = acc + 2^(k-1) + lo·2^s + 2^(s-1), so bits s…k-1 hold
// q + lo + 2^(k-s-1) with q = round(acc / 2^s) (half up): the shift is a choice of bits, the
// rounding the added 2^(s-1). Bit k-1 says q + lo ≥ 0; then q + lo is bits s…k-2, and it is
// ≥ 2^width iff one of bits s+width…k-2 is set. out = clamp(q, -lo, 2^width - 1 - lo).
template Requant(k, s, lo, width) {
    signal input bits[k];
    signal output out;
    var low = 0;
    for (var t = 0; t < width; t++) low += bits[s + t] * 2 ** t;
    var high = 0;
    for (var t = s + width; t < k - 1; t++) high += bits[t];
    component fits = IsZero();
    fits.in <== high;
    signal capped <== (1 - fits.out) * (2 ** width - 1 - low);
    signal kept <== bits[k - 1] * (low + capped);
    out <== kept - lo;
}

// An output neuron: the accumulator itself, from bits of acc + 2^(k-1).
template Signed(k) {
    signal input bits[k];
    signal output out;
    var v = 0;
    for (var t = 0; t < k; t++) v += bits[t] * 2 ** t;
    out <== v - 2 ** (k - 1);
}
`

/** The circom source for `shape`. Deterministic: the same shape always gives the same text. */
export function circuitSource(shape: ZkShape): string {
  const lay = layout(shape)
  const nIn = lay[0].inputs
  const committed = shape.input === 'committed'
  const body = [
    '// Every input is int8.',
    `component int8[${nIn}];`,
    `for (var j = 0; j < ${nIn}; j++) { int8[j] = Int8(); int8[j].in <== x[j]; }`,
    ...lay.flatMap((L, l) => ['', ...denseLayer(L, l, shape.layers[l].relu, l === 0 ? 'x' : `h${l - 1}`, l + 1 < lay.length ? `h${l}` : 'y')]),
    '',
    ...weightCommitment(lay),
    ...(committed ? ['', ...inputCommitment(nIn)] : [])
  ]
  const decls = [
    `signal input x[${nIn}];`,
    ...lay.flatMap((L, l) => [`signal input w${l}[${L.inputs}][${L.groups}];`, `signal input b${l}[${L.groups}];`]),
    `signal output y[${lay[lay.length - 1].outputs}];`,
    'signal output weights;',
    ...(committed ? ['signal output inputHash;'] : [])
  ]
  return [
    `// Generated by tessera shared/zk/circuit.ts for circom ${CIRCOM_VERSION} (--O2) and circomlib ${CIRCOMLIB_VERSION}.`,
    `// Model ${lay.map((l) => l.inputs).join(' → ')} → ${lay[lay.length - 1].outputs}, input ${shape.input}.`,
    'pragma circom 2.1.0;',
    '',
    'include "circomlib/circuits/poseidon.circom";',
    'include "circomlib/circuits/bitify.circom";',
    'include "circomlib/circuits/comparators.circom";',
    TEMPLATES,
    'template Model() {',
    ...[...decls, '', ...body].map((line) => (line === '' ? '' : `    ${line}`)),
    '}',
    '',
    `component main${committed ? '' : ' {public [x]}'} = Model();`,
    ''
  ].join('\n')
}

/** Layer l: packed products, then per group the bit decomposition and one neuron per slot. */
function denseLayer(L: LayerLayout, l: number, relu: boolean, input: string, out: string): string[] {
  const hidden = L.shift !== undefined
  const lines = [
    `// Layer ${l}: ${L.inputs} → ${L.outputs}${relu ? ', ReLU' : ''}; ${L.groups}` +
      ` group(s) of ≤ ${L.slots} slots of ${L.k} bits${hidden ? `; shift ${L.shift}, clamp to [${-L.lo}, ${2 ** L.width - 1 - L.lo}]` : ''}.`,
    `component dense${l} = PackedDense(${L.inputs}, ${L.groups});`,
    `for (var j = 0; j < ${L.inputs}; j++) { dense${l}.x[j] <== ${input}[j]; for (var g = 0; g < ${L.groups}; g++) dense${l}.w[j][g] <== w${l}[j][g]; }`,
    `for (var g = 0; g < ${L.groups}; g++) dense${l}.b[g] <== b${l}[g];`,
    ...(hidden ? [`signal ${out}[${L.outputs}];`] : []),
    `component neuron${l}[${L.outputs}];`
  ]
  const neuron = hidden ? `Requant(${L.k}, ${L.shift}, ${L.lo}, ${L.width})` : `Signed(${L.k})`
  for (let g = 0; g < L.groups; g++) {
    const [n, first] = [groupSize(L, g), g * L.slots]
    lines.push(
      `component unpack${l}_${g} = Unpack(${n}, ${L.k}, ${L.slotOffset});`,
      `unpack${l}_${g}.in <== dense${l}.acc[${g}];`,
      `for (var i = 0; i < ${n}; i++) {`,
      `    neuron${l}[${first} + i] = ${neuron};`,
      `    neuron${l}[${first} + i].bits <== unpack${l}_${g}.bits[i];`,
      `    ${out}[${first} + i] <== neuron${l}[${first} + i].out;`,
      '}'
    )
  }
  return lines
}

/** ChainHash over every layer's packed w (row-major), then b: the order of commitmentElements. */
function weightCommitment(lay: LayerLayout[]): string[] {
  const elements = lay.reduce((a, l) => a + l.inputs * l.groups + l.groups, 0)
  const lines = [`// The weight commitment: ${elements} packed elements, layer by layer (w row-major, then b).`, `component commit = ChainHash(${elements});`]
  let at = 0
  lay.forEach((L, l) => {
    lines.push(`for (var j = 0; j < ${L.inputs}; j++) { for (var g = 0; g < ${L.groups}; g++) commit.in[${at} + j * ${L.groups} + g] <== w${l}[j][g]; }`)
    at += L.inputs * L.groups
    lines.push(`for (var g = 0; g < ${L.groups}; g++) commit.in[${at} + g] <== b${l}[g];`)
    at += L.groups
  })
  lines.push('weights <== commit.out;')
  return lines
}

/** ChainHash over the input as bytes x + 128, 31 to an element: the order of packInput. */
function inputCommitment(nIn: number): string[] {
  const chunks = Math.ceil(nIn / 31)
  return [
    `// The input commitment: x + 128 as bytes, 31 to an element (${chunks} element(s)), little-endian.`,
    `component inputCommit = ChainHash(${chunks});`,
    `for (var c = 0; c < ${chunks}; c++) {`,
    '    var packed = 0;',
    `    for (var j = 31 * c; j < 31 * c + 31 && j < ${nIn}; j++) packed += (x[j] + 128) * 256 ** (j - 31 * c);`,
    '    inputCommit.in[c] <== packed;',
    '}',
    'inputHash <== inputCommit.out;'
  ]
}

/** sha256 of the source: names the circuit (and its cache folder). */
export const circuitHash = (source: string): string => sha256Hex(new TextEncoder().encode(source))
