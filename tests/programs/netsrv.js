// A node `net` server on a UNIX socket counting requests, with a
// setInterval ticker: both counts must carry on after a restore.
const net = require("net");
let requests = 0, ticks = 0;
setInterval(() => ticks++, 20);
net.createServer((c) => c.once("data", () => c.end(`requests=${++requests} ticks=${ticks}\n`)))
  .listen(process.argv[2]);
