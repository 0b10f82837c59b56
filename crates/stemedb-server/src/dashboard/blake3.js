// BLAKE3 (hash mode, 32-byte output), written from the BLAKE3 specification for the dashboard's
// in-browser proof checks: leaf = BLAKE3(0x00 || id), node = BLAKE3(0x01 || left || right), and
// the assertion id = BLAKE3(PAE). Not constant-time; it hashes public data only.
const IV = new Uint32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);
const PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
const CHUNK_START = 1, CHUNK_END = 2, PARENT = 4, ROOT = 8;
const BLOCK = 64, CHUNK = 1024;

const rotr = (x, n) => ((x >>> n) | (x << (32 - n))) >>> 0;

function g(s, a, b, c, d, x, y) {
  s[a] = (s[a] + s[b] + x) >>> 0; s[d] = rotr(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) >>> 0;     s[b] = rotr(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b] + y) >>> 0; s[d] = rotr(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) >>> 0;     s[b] = rotr(s[b] ^ s[c], 7);
}

/** The 8-word chaining value of one compression. */
function compress(cv, m, counter, len, flags) {
  const s = new Uint32Array([...cv, IV[0], IV[1], IV[2], IV[3],
    counter >>> 0, Math.floor(counter / 0x100000000) >>> 0, len, flags]);
  let w = Uint32Array.from(m);
  for (let r = 0; r < 7; r++) {
    g(s, 0, 4, 8, 12, w[0], w[1]);   g(s, 1, 5, 9, 13, w[2], w[3]);
    g(s, 2, 6, 10, 14, w[4], w[5]);  g(s, 3, 7, 11, 15, w[6], w[7]);
    g(s, 0, 5, 10, 15, w[8], w[9]);  g(s, 1, 6, 11, 12, w[10], w[11]);
    g(s, 2, 7, 8, 13, w[12], w[13]); g(s, 3, 4, 9, 14, w[14], w[15]);
    if (r < 6) w = Uint32Array.from(PERM, (i) => w[i]);
  }
  const out = new Uint32Array(8);
  for (let i = 0; i < 8; i++) out[i] = (s[i] ^ s[i + 8]) >>> 0;
  return out;
}

function words(bytes, off, len) {
  const m = new Uint32Array(16);
  for (let i = 0; i < len; i++) m[i >> 2] |= bytes[off + i] << (8 * (i & 3));
  return m;
}

/** Chaining value of chunk `index` (bytes[off, off+len)); ROOT on its last block if `root`. */
function chunkCv(bytes, off, len, index, root) {
  let cv = IV;
  const blocks = Math.max(1, Math.ceil(len / BLOCK));
  for (let b = 0; b < blocks; b++) {
    const blen = Math.min(BLOCK, len - b * BLOCK);
    let flags = (b === 0 ? CHUNK_START : 0) | (b === blocks - 1 ? CHUNK_END : 0);
    if (root && b === blocks - 1) flags |= ROOT;
    cv = compress(cv, words(bytes, off + b * BLOCK, blen), index, blen, flags);
  }
  return cv;
}

function parentCv(left, right, root) {
  const m = new Uint32Array(16);
  m.set(left, 0);
  m.set(right, 8);
  return compress(IV, m, 0, BLOCK, PARENT | (root ? ROOT : 0));
}

/** BLAKE3 of `bytes` (a Uint8Array), 32 bytes. */
export function blake3(bytes) {
  const chunks = Math.max(1, Math.ceil(bytes.length / CHUNK));
  let out;
  if (chunks === 1) {
    out = chunkCv(bytes, 0, bytes.length, 0, true);
  } else {
    const stack = [];
    for (let i = 0; i < chunks - 1; i++) {
      let cv = chunkCv(bytes, i * CHUNK, CHUNK, i, false);
      for (let t = i + 1; (t & 1) === 0; t >>= 1) cv = parentCv(stack.pop(), cv, false);
      stack.push(cv);
    }
    const last = (chunks - 1) * CHUNK;
    out = chunkCv(bytes, last, bytes.length - last, chunks - 1, false);
    while (stack.length > 1) out = parentCv(stack.pop(), out, false);
    out = parentCv(stack.pop(), out, true);
  }
  const digest = new Uint8Array(32);
  for (let i = 0; i < 32; i++) digest[i] = out[i >> 2] >>> (8 * (i & 3)) & 0xff;
  return digest;
}
