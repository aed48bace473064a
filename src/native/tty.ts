// Typed wrappers for ffi/tty.zig and the terminal ioctls ckpt uses.
import { native } from "./load.ts";
import { check, cstr } from "./mod.ts";

/** ioctl request numbers (x86_64, asm-generic/ioctls.h). */
export const TIOC = {
  TCGETS2: 0x802c542a,
  TCSETS2: 0x402c542b,
  TIOCGLCKTRMIOS: 0x5456,
  TIOCSLCKTRMIOS: 0x5457,
  TIOCGWINSZ: 0x5413,
  TIOCSWINSZ: 0x5414,
  TIOCGPTN: 0x80045430,
  TIOCSPTLCK: 0x40045431,
  TIOCGPTLCK: 0x80045439,
  TIOCGPKT: 0x80045438,
  TIOCPKT: 0x5420,
  TIOCGEXCL: 0x80045440,
  TIOCEXCL: 0x540c,
  TIOCGPTPEER: 0x5441,
  TIOCGDEV: 0x80045432,
  TIOCGETD: 0x5424,
  FIONREAD: 0x541b,
  TIOCSCTTY: 0x540e,
  TIOCNOTTY: 0x5422,
  TIOCSPGRP: 0x5410,
  TIOCGPGRP: 0x540f,
  TIOCGSID: 0x5429,
} as const;

export const POLL = { IN: 1, PRI: 2, OUT: 4, ERR: 8, HUP: 16 } as const;

export const tty = {
  /** ioctl whose argument points to buf (read and/or written by the kernel). */
  ioctlBuf(n: number, req: number, buf: Uint8Array<ArrayBuffer>, what = `fd ${n}`): number {
    return check(native().ck_ioctl_ptr(n, BigInt(req), buf), `ioctl(0x${req.toString(16)})`, what);
  },
  /** An int-sized result (TIOCGPTN, FIONREAD, …). */
  getInt(n: number, req: number, what = `fd ${n}`): number {
    const b = new Uint8Array(4);
    tty.ioctlBuf(n, req, b, what);
    return new DataView(b.buffer).getInt32(0, true);
  },
  /** An int passed by pointer (TIOCSPTLCK, TIOCPKT, TIOCSPGRP). */
  setInt(n: number, req: number, v: number, what = `fd ${n}`): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, v, true);
    tty.ioctlBuf(n, req, b, what);
  },
  /** revents of fd for `events`, waiting up to ms (0: none came). */
  wait(n: number, events: number, ms: number): number {
    return check(native().ck_poll_wait(n, events, ms), "poll", `fd ${n}`);
  },
  /** The bytes fed to fd's line discipline as if they had come from the other side. */
  inject(n: number, bytes: Uint8Array<ArrayBuffer>, what = `fd ${n}`): void {
    if (bytes.length) {
      check(native().ck_tty_inject(n, bytes, BigInt(bytes.length)), "ioctl(TIOCSTI)", what);
    }
  },
  /** A new open of /dev/tty referring to the terminal behind ttyFd (which
   * must be nobody's controlling terminal). */
  openAsCtty(ttyFd: number, flags: number, what: string): number {
    return check(native().ck_tty_open_ctty(ttyFd, cstr("/dev/tty"), flags), "open(/dev/tty)", what);
  },
};
