// CRC32C (Castagnoli), slicing-by-8. Used for image payloads; the pages file
// is checksummed natively at memory speed.
const T = (() => {
  const t = new Uint32Array(8 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) {
      t[s * 256 + i] = (t[(s - 1) * 256 + i] >>> 8) ^ t[t[(s - 1) * 256 + i] & 0xff];
    }
  }
  return t;
})();

export function crc32c(data: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0;
  let i = 0;
  const n = data.length;
  for (; i + 8 <= n; i += 8) {
    c ^= data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24);
    c = T[7 * 256 + (c & 0xff)] ^ T[6 * 256 + ((c >>> 8) & 0xff)] ^
      T[5 * 256 + ((c >>> 16) & 0xff)] ^ T[4 * 256 + (c >>> 24)] ^
      T[3 * 256 + data[i + 4]] ^ T[2 * 256 + data[i + 5]] ^
      T[256 + data[i + 6]] ^ T[data[i + 7]];
  }
  for (; i < n; i++) c = T[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// Joining CRCs of pieces (zlib's crc32_combine, Castagnoli polynomial): the
// pages of one run may be checksummed in parts by different threads.
function multModP(a: number, b: number): number {
  let m = 0x80000000, p = 0;
  while (m !== 0) {
    if (a & m) {
      p = (p ^ b) >>> 0;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? ((b >>> 1) ^ 0x82f63b78) >>> 0 : b >>> 1;
  }
  return p >>> 0;
}

/** x^(8n) mod P, by squaring. */
function xPow8n(n: bigint): number {
  let p = 0x80000000, sq = 0x40000000;
  for (let k = n * 8n; k > 0n; k >>= 1n) {
    if (k & 1n) p = multModP(sq, p);
    sq = multModP(sq, sq);
  }
  return p;
}

/** CRC32C of A ++ B from crc32c(A), crc32c(B) and B's length. */
export function crc32cCombine(crcA: number, crcB: number, lenB: bigint): number {
  return (multModP(xPow8n(lenB), crcA) ^ crcB) >>> 0;
}
