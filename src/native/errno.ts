// errno numbers (x86_64 Linux) and their names, for messages people can act on.
const NAMES: Record<number, [string, string]> = {
  1: ["EPERM", "operation not permitted"],
  2: ["ENOENT", "no such file or directory"],
  3: ["ESRCH", "no such process"],
  4: ["EINTR", "interrupted system call"],
  5: ["EIO", "input/output error"],
  9: ["EBADF", "bad file descriptor"],
  10: ["ECHILD", "no child processes"],
  11: ["EAGAIN", "resource temporarily unavailable"],
  12: ["ENOMEM", "cannot allocate memory"],
  13: ["EACCES", "permission denied"],
  14: ["EFAULT", "bad address"],
  16: ["EBUSY", "device or resource busy"],
  17: ["EEXIST", "already exists"],
  20: ["ENOTDIR", "not a directory"],
  21: ["EISDIR", "is a directory"],
  22: ["EINVAL", "invalid argument"],
  24: ["EMFILE", "too many open files"],
  25: ["ENOTTY", "inappropriate ioctl for device"],
  28: ["ENOSPC", "no space left on device"],
  29: ["ESPIPE", "illegal seek"],
  30: ["EROFS", "read-only file system"],
  32: ["EPIPE", "broken pipe"],
  38: ["ENOSYS", "function not implemented"],
  61: ["ENODATA", "no data available"],
  88: ["ENOTSOCK", "not a socket"],
  95: ["EOPNOTSUPP", "operation not supported"],
  98: ["EADDRINUSE", "address already in use"],
  104: ["ECONNRESET", "connection reset by peer"],
  107: ["ENOTCONN", "not connected"],
  110: ["ETIMEDOUT", "timed out"],
  111: ["ECONNREFUSED", "connection refused"],
  92: ["ENOPROTOOPT", "protocol not available"],
  97: ["EAFNOSUPPORT", "address family not supported"],
  99: ["EADDRNOTAVAIL", "cannot assign requested address"],
  103: ["ECONNABORTED", "connection aborted"],
  19: ["ENODEV", "no such device"],
};

export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ENOSPC: 28,
  ENOSYS: 38,
  EOPNOTSUPP: 95,
  ECONNREFUSED: 111,
  ENODEV: 19,
  ENOPROTOOPT: 92,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ECONNRESET: 104,
  ENOTCONN: 107,
} as const;

export function errnoName(errno: number): string {
  return NAMES[errno]?.[0] ?? `errno ${errno}`;
}

export function errnoText(errno: number): string {
  const n = NAMES[errno];
  return n ? `${n[1]} (${n[0]})` : `errno ${errno}`;
}
