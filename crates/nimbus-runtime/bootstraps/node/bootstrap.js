/**
 * Nimbus built-in Node.js runtime bootstrap.
 *
 * Run inside each function sandbox as `node /var/runtime/bootstrap.js`
 * (CommonJS). It speaks the AWS Lambda Runtime API (2018-06-01) with Node's
 * standard library only and reproduces the behaviour of AWS's Node.js runtime
 * (aws-lambda-nodejs-runtime-interface-client): handler resolution for
 * CommonJS and ES modules, async / callback / context.succeed handlers,
 * callbackWaitsForEmptyEventLoop, the context object, console patching and
 * the error shapes.
 *
 * Performance notes: the Runtime API client is a minimal HTTP/1.1 client over
 * one persistent `net` socket (Node's `http` client costs several times more
 * per request); a result is posted and the next event asked for in one write
 * (HTTP/1.1 pipelining). While no request is in flight the socket is unref'd so the
 * event loop can drain and `beforeExit` can fire, which is how AWS implements
 * callbackWaitsForEmptyEventLoop and "handler never called back".
 */

'use strict';

const net = require('net');
const util = require('util');
const path = require('path');
const fs = require('fs');

const API_PREFIX = '/2018-06-01/runtime/';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';
const REQUEST_ID_SYMBOL = Symbol.for('aws.lambda.runtime.requestId');

/* ------------------------------------------------------------------------ */
/* Errors (same classes and shapes as AWS's runtime)                         */
/* ------------------------------------------------------------------------ */

class ImportModuleError extends Error {}
class HandlerNotFound extends Error {}
class MalformedHandlerName extends Error {}
class UserCodeSyntaxError extends Error {}
class UnhandledPromiseRejection extends Error {
  constructor(reason, promise) {
    super(reason);
    this.reason = reason;
    this.promise = promise;
  }
}
class NodeJsExit extends Error {
  constructor() {
    super(
      'The Lambda runtime client detected an unexpected Node.js exit code. This is most commonly ' +
        'caused by a Promise that was never settled. For more information, see ' +
        'https://nodejs.org/docs/latest/api/process.html#exit-codes',
    );
  }
}
for (const E of [ImportModuleError, HandlerNotFound, MalformedHandlerName, UserCodeSyntaxError, UnhandledPromiseRejection, NodeJsExit]) {
  E.prototype.name = `Runtime.${E.name}`;
}

function isErrorLike(obj) {
  return !!(
    obj &&
    obj.name &&
    obj.message &&
    obj.stack &&
    typeof obj.name === 'string' &&
    typeof obj.message === 'string' &&
    typeof obj.stack === 'string'
  );
}

/** Body posted to /invocation/{id}/error and /init/error. */
function toRapidResponse(error) {
  try {
    if (util.types.isNativeError(error) || isErrorLike(error)) {
      return {
        errorType: error.name,
        errorMessage: error.message,
        trace: typeof error.stack === 'string' ? error.stack.split('\n') : [],
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_e) {
    return {
      errorType: 'handled',
      errorMessage:
        'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
      trace: [],
    };
  }
}

function withEnumerableProperties(error) {
  if (error instanceof Error) {
    const ret = Object.assign({ errorType: error.name, errorMessage: error.message, code: error.code }, error);
    if (typeof error.stack === 'string') ret.stack = error.stack.split('\n');
    return ret;
  }
  return error;
}

/** The "\t{json}" suffix AWS prints after "Invoke Error" and friends. */
function toFormatted(error) {
  try {
    return '\t' + JSON.stringify(error, (_k, v) => withEnumerableProperties(v));
  } catch (_e) {
    return '\t' + JSON.stringify(toRapidResponse(error));
  }
}

function intoError(err) {
  return err instanceof Error ? err : new Error(err);
}

/* ------------------------------------------------------------------------ */
/* Console: `${ISO time}\t${requestId}\t${LEVEL}\t${message}`, one line each  */
/* ------------------------------------------------------------------------ */

function patchConsole() {
  const levels = {
    TRACE: 1,
    DEBUG: 2,
    INFO: 3,
    WARN: 4,
    ERROR: 5,
    FATAL: 6,
  };
  const envLevel = (process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase();
  const min = levels[envLevel] || levels.TRACE;
  const out = process.stdout;
  const nop = () => {};
  const make = (name) => {
    if (levels[name] < min) return nop;
    const tag = '\t' + name + '\t';
    return function (message, ...params) {
      let line = new Date().toISOString() + '\t' + globalThis[REQUEST_ID_SYMBOL] + tag + util.format(message, ...params);
      if (line.indexOf('\n') !== -1) line = line.replace(/\n/g, '\r');
      out.write(line + '\n');
    };
  };
  console.trace = make('TRACE');
  console.debug = make('DEBUG');
  console.info = make('INFO');
  console.log = console.info;
  console.warn = make('WARN');
  console.error = make('ERROR');
  console.fatal = make('FATAL');
}

function logError(msg, err) {
  console.error(msg, toFormatted(intoError(err)));
}

/* ------------------------------------------------------------------------ */
/* Runtime API client: minimal HTTP/1.1 over one persistent socket           */
/* ------------------------------------------------------------------------ */

const CRLFCRLF = Buffer.from('\r\n\r\n');

class RuntimeClient {
  constructor(hostPort) {
    const i = hostPort.lastIndexOf(':');
    this.host = (i >= 0 ? hostPort.slice(0, i) : hostPort).replace(/^\[|\]$/g, '') || '127.0.0.1';
    this.port = i >= 0 ? parseInt(hostPort.slice(i + 1), 10) : 80;
    this.hostHeader = hostPort;
    this.sock = null;
    this.buf = null; // unparsed bytes
    // The requests written and not yet answered, in order:
    // { waiters: [{ data, resolve, reject }], retried, got }.
    this.pending = null;
    this.head = null; // parsed head of the response being read
  }

  _connect() {
    const s = net.connect({ host: this.host, port: this.port, noDelay: true });
    // Only the current socket's events count: one closed after an answer that said
    // `Connection: close` may report its end after a new one has taken its place.
    s.on('data', (d) => this.sock === s && this._onData(d));
    s.on('error', (e) => this.sock === s && this._onClose(e));
    s.on('close', () => this.sock === s && this._onClose(null));
    this.sock = s;
    this.buf = null;
    this.head = null;
  }

  _data(method, reqPath, body, extraHeaders) {
    if (body === undefined) {
      return `${method} ${reqPath} HTTP/1.1\r\nHost: ${this.hostHeader}\r\n\r\n`;
    }
    return (
      `${method} ${reqPath} HTTP/1.1\r\nHost: ${this.hostHeader}\r\nContent-Type: application/json\r\n` +
      (extraHeaders || '') +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
      body
    );
  }

  /**
   * Writes the requests back to back in one write (HTTP/1.1 pipelining) and returns a promise
   * per request, settled with its answer, in order.
   */
  _pipeline(datas) {
    const waiters = [];
    const promises = datas.map(
      (data) => new Promise((resolve, reject) => waiters.push({ data, resolve, reject })),
    );
    this.pending = { waiters, retried: false, got: false };
    this._send();
    return promises;
  }

  request(method, reqPath, body, extraHeaders) {
    return this._pipeline([this._data(method, reqPath, body, extraHeaders)])[0];
  }

  /**
   * Posts an invocation's result and asks for the next event in the same write, without
   * waiting for the 202 in between: the runtime's process sleeps once per invocation instead of
   * twice, and the server reads both requests at once. Resolves once the post is answered, with
   * `{ next }`: the promise of the next event.
   */
  _postThenNext(reqPath, body, extraHeaders, what) {
    const [post, next] = this._pipeline([
      this._data('POST', reqPath, body, extraHeaders),
      this._data('GET', API_PREFIX + 'invocation/next'),
    ]);
    // Settled with the post when the connection fails; whoever takes `next` sees it too.
    next.catch(noop);
    return post.then((res) => {
      checkPost(res, what);
      return { next: next.then(checkNext) };
    });
  }

  /** Closes the connection, if any; the next request opens a new one. */
  close() {
    const s = this.sock;
    this.sock = null;
    if (s) s.destroy();
  }

  _send() {
    if (this.sock === null) this._connect();
    this.sock.ref();
    const w = this.pending.waiters;
    this.sock.write(w.length === 1 ? w[0].data : w.map((x) => x.data).join(''));
  }

  _onClose(err) {
    const s = this.sock;
    if (s === null) return;
    this.sock = null;
    s.destroy();
    const p = this.pending;
    if (p === null) return;
    if (!p.got && !p.retried) {
      // Stale kept-alive connection: nothing of the awaited answer received, resend what is
      // still unanswered once.
      p.retried = true;
      this._send();
      return;
    }
    this.pending = null;
    const e = err || new Error('Runtime API closed the connection');
    for (const w of p.waiters) w.reject(e);
  }

  _onData(d) {
    const p = this.pending;
    if (p !== null) p.got = true;
    this.buf = this.buf === null ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.head === null) {
        const end = this.buf.indexOf(CRLFCRLF);
        if (end < 0) return;
        const lines = this.buf.latin1Slice(0, end).split('\r\n');
        const headers = {};
        for (let i = 1; i < lines.length; i++) {
          const line = lines[i];
          const c = line.indexOf(':');
          if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
        }
        const status = parseInt(lines[0].slice(9, 12), 10);
        const cl = headers['content-length'];
        this.head = {
          status,
          headers,
          length: cl !== undefined ? parseInt(cl, 10) : -1,
          chunked: cl === undefined && /chunked/i.test(headers['transfer-encoding'] || ''),
          close: (headers.connection || '').toLowerCase() === 'close' || lines[0].startsWith('HTTP/1.0'),
        };
        this.buf = this.buf.subarray(end + 4);
        if (!this.head.chunked && this.head.length < 0) {
          this.head.length = status === 204 || status === 304 || status < 200 ? 0 : -2; // -2: until close
        }
      }
      const h = this.head;
      let body;
      if (h.chunked) {
        body = this._takeChunked();
        if (body === null) return;
      } else if (h.length >= 0) {
        if (this.buf.length < h.length) return;
        body = this.buf.subarray(0, h.length);
        this.buf = this.buf.subarray(h.length);
      } else {
        return; // read until close: not used by the Runtime API
      }
      this.head = null;
      if (this.buf.length === 0) this.buf = null;
      const cur = this.pending;
      const w = cur === null ? undefined : cur.waiters.shift();
      if (cur !== null && cur.waiters.length === 0) this.pending = null;
      else if (cur !== null) cur.got = this.buf !== null;
      if (h.close) {
        const s = this.sock;
        this.sock = null;
        if (s) s.destroy();
        // Whatever was asked after it goes again on a new connection.
        if (this.pending !== null) this._send();
      } else if (this.sock && this.pending === null) {
        this.sock.unref(); // idle: let the event loop drain (beforeExit)
      }
      if (w) w.resolve({ status: h.status, headers: h.headers, body });
      if (this.buf === null) return;
    }
  }

  _takeChunked() {
    const parts = [];
    let off = 0;
    const buf = this.buf;
    for (;;) {
      const eol = buf.indexOf('\r\n', off);
      if (eol < 0) return null;
      const size = parseInt(buf.latin1Slice(off, eol).split(';')[0], 16);
      if (size === 0) {
        // trailers until empty line
        let t = eol + 2;
        for (;;) {
          const e2 = buf.indexOf('\r\n', t);
          if (e2 < 0) return null;
          if (e2 === t) {
            this.buf = buf.subarray(e2 + 2);
            return Buffer.concat(parts);
          }
          t = e2 + 2;
        }
      }
      if (buf.length < eol + 2 + size + 2) return null;
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      off = eol + 2 + size + 2;
    }
  }

  async next() {
    return checkNext(await this.request('GET', API_PREFIX + 'invocation/next'));
  }

  /** Posts the result; resolves with `{ next }`, the promise of the next event. */
  postResponseThenNext(id, bodyString) {
    return this._postThenNext(
      API_PREFIX + 'invocation/' + encodeURIComponent(id) + '/response',
      bodyString,
      undefined,
      'response',
    );
  }

  /** Posts the error; resolves with `{ next }`, the promise of the next event. */
  postErrorThenNext(id, error) {
    const [body, extra] = errorPost(error);
    return this._postThenNext(errorPath(id), body, extra, 'error');
  }

  /** Posts the error alone (the process exits after it). */
  async postError(id, error) {
    const [body, extra] = errorPost(error);
    checkPost(await this.request('POST', errorPath(id), body, extra), 'error');
  }

  async postInitError(error) {
    const [body, extra] = errorPost(error);
    checkPost(await this.request('POST', API_PREFIX + 'init/error', body, extra), 'init error');
  }
}

function errorPath(id) {
  return API_PREFIX + 'invocation/' + encodeURIComponent(id) + '/error';
}

/** An error's body and its error-type header line, as every error post sends them. */
function errorPost(error) {
  const response = toRapidResponse(error);
  return [JSON.stringify(response), `${ERROR_TYPE_HEADER}: ${headerValue(response.errorType)}\r\n`];
}

function headerValue(s) {
  return String(s).replace(/[^\x20-\x7e]/g, '?');
}

function checkNext(res) {
  if (res.status !== 200) {
    throw new Error(`Runtime API /next returned ${res.status}: ${res.body.toString('utf8', 0, 500)}`);
  }
  return res;
}

function checkPost(res, what) {
  if (res.status >= 200 && res.status < 300) return;
  process.stderr.write(
    `[nimbus] Runtime API rejected the ${what}: HTTP ${res.status} ${res.body.toString('utf8', 0, 500)}\n`,
  );
  if (res.status >= 500) process.exit(1); // AWS: non-recoverable state, exit
}

/* ------------------------------------------------------------------------ */
/* Handler loading (same rules as AWS's UserFunction.js)                     */
/* ------------------------------------------------------------------------ */

function hasPackageJsonTypeModule(folder) {
  for (;;) {
    if (folder.endsWith('/node_modules')) return false;
    const pj = path.join(folder, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        const pkg = JSON.parse(fs.readFileSync(pj, 'utf8'));
        if (pkg) return pkg.type === 'module';
      } catch (e) {
        console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, e);
        return false;
      }
    }
    if (folder === '/' || folder === path.dirname(folder)) return false;
    folder = path.dirname(folder);
  }
}

function tryRequire(file) {
  if (!fs.existsSync(file)) return undefined;
  try {
    return require(file);
  } catch (e) {
    // An ES module reached through require(): load it with import().
    if (e && e.code === 'ERR_REQUIRE_ESM') return tryImport(file);
    throw e;
  }
}

async function tryImport(file) {
  if (!fs.existsSync(file)) return undefined;
  const { pathToFileURL } = require('url');
  return await import(pathToFileURL(file).href);
}

async function loadModule(appRoot, moduleRoot, module) {
  const lambdaStylePath = path.resolve(appRoot, moduleRoot, module);
  const extensionless = await tryRequire(lambdaStylePath);
  if (extensionless) return extensionless;
  const pjHasModule = hasPackageJsonTypeModule(path.dirname(lambdaStylePath));
  if (!pjHasModule) {
    const loaded = await tryRequire(lambdaStylePath + '.js');
    if (loaded) return loaded;
  }
  const loaded =
    (pjHasModule && (await tryImport(lambdaStylePath + '.js'))) ||
    (await tryImport(lambdaStylePath + '.mjs')) ||
    (await tryRequire(lambdaStylePath + '.cjs'));
  if (loaded) return loaded;
  // Node-style resolution (node_modules, directories with index.js, ...).
  const nodeStylePath = require.resolve(module, { paths: [appRoot, moduleRoot] });
  return require(nodeStylePath);
}

async function loadHandler(appRoot, fullHandlerString) {
  if (fullHandlerString.includes('..')) {
    throw new MalformedHandlerName(
      `'${fullHandlerString}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const handlerString = path.basename(fullHandlerString);
  const moduleRoot = fullHandlerString.substring(0, fullHandlerString.indexOf(handlerString));
  const match = handlerString.match(/^([^.]*)\.(.*)$/);
  if (!match || match.length !== 3) throw new MalformedHandlerName('Bad handler');
  const [, module, handlerPath] = match;

  let app;
  try {
    app = await loadModule(appRoot, moduleRoot, module);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && e.code === 'MODULE_NOT_FOUND') throw new ImportModuleError(e);
    throw e;
  }
  const fn = handlerPath.split('.').reduce((obj, key) => obj && obj[key], app);
  if (!fn) throw new HandlerNotFound(`${fullHandlerString} is undefined or not exported`);
  if (typeof fn !== 'function') throw new HandlerNotFound(`${fullHandlerString} is not a function`);
  return fn;
}

/* ------------------------------------------------------------------------ */
/* Invoke loop                                                               */
/* ------------------------------------------------------------------------ */

const env = process.env;
const TRACE_KEY = '_X_AMZN_TRACE_ID';

/**
 * `_X_AMZN_TRACE_ID` changes with every invocation. Assigning it to `process.env` calls glibc's
 * setenv, which keeps every distinct value it is given for the life of the process (about 200
 * bytes each), so a warm instance grew by that much per invocation until its memory limit
 * killed it. Instead `process.env` becomes a proxy of the real environment that answers for
 * this one variable from a string held here: code reading `process.env` (the X-Ray SDK,
 * OpenTelemetry, `{ ...process.env }`) and child processes started with the default
 * environment see the current id, every other variable is the real environment's, read and
 * written through. What a proxy cannot reach does not see the id: C code calling getenv, worker
 * threads started with the default environment (a copy of the real one), and `util.inspect`
 * (which shows a proxy's target). Returns the setter (undefined: absent).
 */
function installTraceVariable() {
  let value = env[TRACE_KEY];
  delete env[TRACE_KEY];
  const descriptor = () => ({ value, writable: true, enumerable: true, configurable: true });
  process.env = new Proxy(env, {
    get: (t, k) => (k === TRACE_KEY ? value : t[k]),
    set: (t, k, v) => {
      if (k === TRACE_KEY) value = `${v}`;
      else t[k] = v;
      return true;
    },
    has: (t, k) => (k === TRACE_KEY ? value !== undefined : k in t),
    deleteProperty: (t, k) => {
      if (k === TRACE_KEY) value = undefined;
      else delete t[k];
      return true;
    },
    ownKeys: (t) => {
      const keys = Reflect.ownKeys(t);
      if (value !== undefined) keys.push(TRACE_KEY);
      return keys;
    },
    getOwnPropertyDescriptor: (t, k) =>
      k === TRACE_KEY ? (value === undefined ? undefined : descriptor()) : Reflect.getOwnPropertyDescriptor(t, k),
    defineProperty: (t, k, d) => {
      if (k !== TRACE_KEY) return Reflect.defineProperty(t, k, d);
      value = `${d.value}`;
      return true;
    },
  });
  return (v) => {
    value = v;
  };
}

let setTrace = (v) => {
  if (v === undefined) delete env[TRACE_KEY];
  else env[TRACE_KEY] = v;
};

// Filled in by main(): a pre-initialised instance learns its function only then.
const STATIC_CONTEXT = {};

function loadStaticContext() {
  Object.assign(STATIC_CONTEXT, {
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
  });
}

/**
 * Pre-initialised instance (a Nimbus spare): node started and loaded this file before any
 * function was chosen. The function's environment arrives on `fd` as KEY=value\0 entries ended
 * by an empty one; it is applied while the sandbox mounts the function's code, which one more
 * NUL then says is at /var/task. End of file before that: the spare was let go (or its
 * assignment failed), and the process exits.
 */
function receiveAssignment(fd) {
  const chunk = Buffer.allocUnsafe(16384);
  let data = Buffer.alloc(0);
  // Reads once more; false at end of file (or if the pipe broke).
  const more = () => {
    let n = 0;
    for (;;) {
      try {
        n = fs.readSync(fd, chunk, 0, chunk.length, null);
      } catch (e) {
        if (e && e.code === 'EINTR') continue;
        n = 0;
      }
      break;
    }
    if (n > 0) data = Buffer.concat([data, chunk.subarray(0, n)]);
    return n > 0;
  };
  // Where the environment's closing empty entry is, once it has come.
  const envEnd = () => {
    if (data.length > 0 && data[0] === 0) return 0;
    const i = data.indexOf(ENV_END);
    return i < 0 ? -1 : i + 1;
  };
  let end;
  while ((end = envEnd()) < 0) {
    if (!more()) process.exit(0);
  }
  const next = parseAssignment(data.subarray(0, end));
  // Only what changes is written: setting TZ, even to the same value, makes node reload the
  // time zone, and every write goes through libuv's environment lock.
  for (const k of Object.keys(env)) if (!next.has(k)) delete env[k];
  for (const [k, v] of next) if (env[k] !== v) env[k] = v;
  // The code's mount: the byte after that entry.
  while (data.length < end + 2) {
    if (!more()) process.exit(0);
  }
  try {
    fs.closeSync(fd);
  } catch (e) {
    /* already closed */
  }
  process.chdir(env.LAMBDA_TASK_ROOT || '/var/task');
}

/** The end of a handoff's environment: its last entry's NUL, then an empty entry. */
const ENV_END = Buffer.from([0, 0]);

/** The function's environment from an assignment: KEY=value entries, each ending in NUL. */
function parseAssignment(data) {
  const next = new Map();
  for (const entry of data.toString('utf8').split('\0')) {
    if (!entry) continue;
    const eq = entry.indexOf('=');
    if (eq > 0) next.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return next;
}

// A single replaceable 'beforeExit' action, as in AWS's BeforeExitListener.
const noop = () => {};
let beforeExitAction = noop;
process.on('beforeExit', () => beforeExitAction());

function isPromise(obj) {
  return obj && obj.then && typeof obj.then === 'function';
}

function parseJsonHeader(value, name) {
  if (value === undefined) return undefined;
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new Error(`Cannot parse ${name} as json: ${err.toString()}`);
  }
}

function serialize(result) {
  return JSON.stringify(result === undefined ? null : result);
}

class Runtime {
  constructor(client, handler) {
    this.client = client;
    this.handler = handler;
    this.isAsync = handler.constructor && handler.constructor.name === 'AsyncFunction';
    this.arity = handler.length;
    this.currentId = null;
    // Called with `{ next }` once a result is posted: the next event, already asked for.
    this.scheduleNext = (posted) =>
      setImmediate(() => this.handleOnce(posted && posted.next).catch((err) => this.fatal(err)));
  }

  fatal(err) {
    console.log(`Unexpected Top Level Error: ${err && err.toString()}`);
    process.exit(1);
  }

  async handleOnce(next) {
    const { headers, body } = await (next || this.client.next());
    const id = headers['lambda-runtime-aws-request-id'];
    globalThis[REQUEST_ID_SYMBOL] = id;
    this.currentId = id;
    const trace = headers['lambda-runtime-trace-id'];
    setTrace(trace || undefined);

    const client = this.client;
    const scheduleNext = this.scheduleNext;
    let finished = false; // only the first callback / succeed / fail / done counts
    let completed = false;
    let waitForEmptyEventLoop = true;
    // A result or an error has been posted for this invocation, with `GET /next` behind it.
    let reported = false;

    const postError = (err) => {
      logError('Invoke Error', err);
      reported = true;
      client.postErrorThenNext(id, err).then(scheduleNext, (e) => this.fatal(e));
    };
    const complete = (result) => {
      if (completed) {
        console.error(
          'Invocation has already been reported as done. Cannot call complete more than once per invocation.',
        );
        return;
      }
      let bodyString;
      try {
        bodyString = serialize(result);
      } catch (_e) {
        throw new Error('Unable to stringify response body');
      }
      completed = true;
      reported = true;
      client.postResponseThenNext(id, bodyString).then(scheduleNext, (e) => this.fatal(e));
    };
    const done = (err, result) => {
      beforeExitAction = noop;
      if (err !== undefined && err !== null) postError(err);
      else complete(result);
    };
    const once = (fn) =>
      function () {
        if (!finished) {
          fn.apply(null, arguments);
          finished = true;
        }
      };
    const callback = once((err, result) => {
      beforeExitAction = noop;
      if (err !== undefined && err !== null) {
        postError(err);
      } else if (!waitForEmptyEventLoop) {
        complete(result);
      } else {
        // AWS semantics: respond once the event loop has drained.
        beforeExitAction = () => setImmediate(() => complete(result));
      }
    });
    const succeed = once((result) => done(null, result));
    const fail = once((err) => (err === undefined || err === null ? done('handled') : done(err, null)));
    const context = {
      get callbackWaitsForEmptyEventLoop() {
        return waitForEmptyEventLoop;
      },
      set callbackWaitsForEmptyEventLoop(value) {
        waitForEmptyEventLoop = value;
      },
      succeed,
      fail,
      done: once(done),
    };

    // Errors escaping the handler asynchronously belong to this invocation while it runs. Once
    // its result is posted, the connection holds the pipelined `GET /next`, answered only when
    // the next event comes: an error posted behind it would wait for that event and then fail
    // an invocation that had nothing to do with it. The error is in the log already; the
    // instance just ends, as on Lambda, and the next invocation gets a new one.
    this.onFatal = (error, exitCode) => {
      if (reported) process.exit(exitCode);
      client.postError(id, error).then(
        () => process.exit(exitCode),
        () => process.exit(exitCode),
      );
    };
    // If the event loop drains before the handler reports anything.
    const isAsync = this.isAsync;
    beforeExitAction = () => {
      completed = true;
      finished = true;
      reported = true;
      beforeExitAction = noop;
      if (isAsync) {
        const e = new NodeJsExit();
        logError('Invoke Error', e);
        client.postErrorThenNext(id, e).then(scheduleNext, (e2) => this.fatal(e2));
      } else {
        client.postResponseThenNext(id, 'null').then(scheduleNext, (e2) => this.fatal(e2));
      }
    };

    try {
      Object.assign(context, STATIC_CONTEXT, {
        clientContext: parseJsonHeader(headers['lambda-runtime-client-context'], 'ClientContext'),
        identity: parseJsonHeader(headers['lambda-runtime-cognito-identity'], 'CognitoIdentity'),
        invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
        awsRequestId: id,
        getRemainingTimeInMillis: makeRemaining(headers['lambda-runtime-deadline-ms']),
      });
      const event = JSON.parse(body.toString('utf8'));
      const result = this.handler(event, context, callback);
      if (isPromise(result)) {
        result.then(context.succeed, context.fail).catch(context.fail);
      } else if (result !== undefined && this.arity < 3 && !this.isAsync) {
        // Nimbus extension: a plain function returning a value responds with it
        // (AWS would ignore the value and respond null once the loop drains).
        context.succeed(result);
      }
    } catch (err) {
      callback(err);
    }
  }
}

function makeRemaining(deadlineHeader) {
  const deadline = parseInt(deadlineHeader, 10);
  return function getRemainingTimeInMillis() {
    return deadline - Date.now();
  };
}

/**
 * While a spare waits for its function, run once through what a cold start does, so V8 has
 * compiled it and node has initialised it lazily before the clock starts: the output streams,
 * the assignment's parsing and the environment's setter, handler resolution, the console, the
 * CommonJS loader (a real file resolved, read, compiled and run through `require`), and one
 * whole invocation of a stand-in handler through the real `Runtime` and `RuntimeClient` against
 * a stand-in Runtime API on loopback (a TCP connection, `/next` with its headers, the context,
 * the result posted and its 202).
 */
async function warmUp() {
  try {
    // The output streams are made on first use (a type check of fds 1 and 2 and a pipe
    // stream each), as is the time zone data the console's timestamps use.
    void process.stdout;
    void process.stderr;
    void new Date().toISOString();
    void util.format('%s', {});
    const own = fs.openSync(__filename, 'r');
    try {
      fs.readSync(own, Buffer.allocUnsafe(64), 0, 64, null);
    } finally {
      fs.closeSync(own);
    }
    parseAssignment(Buffer.from('NIMBUS_WARM_UP=1\0'));
    env.NIMBUS_WARM_UP = '1';
    delete env.NIMBUS_WARM_UP;
    // Handler resolution for a module that does not exist, down to require.resolve: a function
    // whose file is not `<module>.js` is found only after these misses...
    await loadHandler(__dirname, 'nimbus-warm-up-missing.handler').catch(noop);
    // ...and for the stand-in module installed beside this file, found, read, compiled and run
    // by `require` as a function's own file is. Resolving and loading a real file the first
    // time costs a cold start about 0.15 ms more than a compile from a string warms away. The
    // module is then forgotten, so the function's `require.cache` holds only its own.
    const standIn = path.join(__dirname, 'nimbus-warm-up.js');
    const handler = await loadHandler(__dirname, 'nimbus-warm-up.handler').catch(
      () => async (event) => ({ ok: true, event }),
    );
    delete require.cache[standIn];
    module.children = module.children.filter((c) => c.id !== standIn);
    // The console and context set-up run again with the function's environment.
    patchConsole();
    loadStaticContext();
    await new Promise((resolve) => {
      // Every connection the stand-in accepted, so none outlives the warm-up (an open handle
      // would keep the event loop from ever draining, and 'beforeExit' from firing).
      const accepted = new Set();
      const server = net.createServer((c) => {
        accepted.add(c);
        let pending = Buffer.alloc(0);
        c.on('error', noop);
        c.on('data', (d) => {
          pending = Buffer.concat([pending, d]);
          for (;;) {
            const end = pending.indexOf(CRLFCRLF);
            if (end < 0) return;
            const head = pending.latin1Slice(0, end);
            const cl = /content-length:\s*(\d+)/i.exec(head);
            const total = end + 4 + (cl ? parseInt(cl[1], 10) : 0);
            if (pending.length < total) return;
            pending = pending.subarray(total);
            if (head.startsWith('GET')) {
              const event = '{"warm":true}';
              c.write(
                'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
                  'Lambda-Runtime-Aws-Request-Id: nimbus-warm-up\r\n' +
                  `Lambda-Runtime-Deadline-Ms: ${Date.now() + 1000}\r\n` +
                  'Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:warm-up\r\n' +
                  `Content-Length: ${event.length}\r\n\r\n${event}`,
              );
            } else {
              c.write('HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{"status":"OK"}');
            }
          }
        });
      });
      const client = new RuntimeClient('127.0.0.1:0');
      let finished = false;
      let timer = null;
      const finish = () => {
        if (finished) return;
        finished = true;
        // A timer left to fire would run in whatever the spare is doing a second from now:
        // often its function's cold start.
        clearTimeout(timer);
        client.close();
        server.close();
        for (const c of accepted) c.destroy();
        globalThis[REQUEST_ID_SYMBOL] = undefined;
        beforeExitAction = noop;
        resolve();
      };
      timer = setTimeout(finish, 1000).unref();
      server.on('error', finish);
      server.listen(0, '127.0.0.1', () => {
        client.port = server.address().port;
        const runtime = new Runtime(client, handler);
        // One invocation only: where the real loop asks for the next one, stop.
        runtime.scheduleNext = finish;
        runtime.fatal = finish;
        runtime.handleOnce().catch(finish);
      });
    });
  } catch (e) {
    /* warming is best effort */
  }
}

/**
 * A spare is given its instance's Runtime API address before its function: connect now, so the
 * first `/next` of the cold start goes out on an open connection. Null if there is none or it
 * cannot be opened (the first request then connects as usual).
 */
async function preconnect() {
  if (!env.AWS_LAMBDA_RUNTIME_API) return null;
  const client = new RuntimeClient(env.AWS_LAMBDA_RUNTIME_API);
  try {
    client._connect();
    const sock = client.sock;
    const open = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), 1000);
      sock.once('connect', () => {
        clearTimeout(timer);
        resolve(true);
      });
      sock.once('error', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (open && client.sock === sock) {
      sock.unref();
      return client;
    }
  } catch (e) {
    /* connects on first use instead */
  }
  client.close();
  return null;
}

async function main() {
  setTrace = installTraceVariable();
  let preconnected = null;
  if (env.NIMBUS_HANDOFF_FD) {
    await warmUp();
    preconnected = await preconnect();
    // The server counts the spare as ready only once it reads this: node takes tens of
    // milliseconds to start, and a cold start should not wait for that.
    if (env.NIMBUS_READY_LINE) fs.writeSync(1, env.NIMBUS_READY_LINE + '\n');
    receiveAssignment(parseInt(env.NIMBUS_HANDOFF_FD, 10));
  }
  loadStaticContext();
  patchConsole();
  let client = preconnected;
  if (client === null || client.hostHeader !== env.AWS_LAMBDA_RUNTIME_API) {
    if (client !== null) client.close();
    client = new RuntimeClient(env.AWS_LAMBDA_RUNTIME_API);
  }
  let runtime = null;

  const fatal = (error, exitCode) => {
    if (runtime !== null && runtime.onFatal) {
      runtime.onFatal(error, exitCode);
    } else {
      client.postInitError(error).then(
        () => process.exit(exitCode),
        () => process.exit(exitCode),
      );
    }
  };
  process.on('uncaughtException', (error) => {
    logError('Uncaught Exception', error);
    fatal(error, 129);
  });
  process.on('unhandledRejection', (reason, promise) => {
    const error = new UnhandledPromiseRejection(reason, promise);
    logError('Unhandled Promise Rejection', error);
    fatal(error, 128);
  });

  const appRoot = env.LAMBDA_TASK_ROOT || process.cwd();
  let handler;
  try {
    handler = await loadHandler(appRoot, env._HANDLER || '');
  } catch (error) {
    logError('Uncaught Exception', error);
    await client.postInitError(error).catch(noop);
    process.exit(129);
  }
  runtime = new Runtime(client, handler);
  // The first poll goes out now rather than on the next turn of the event loop.
  runtime.handleOnce().catch((err) => runtime.fatal(err));
}

main();
