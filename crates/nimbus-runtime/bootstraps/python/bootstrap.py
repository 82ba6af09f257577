"""Nimbus built-in Python runtime bootstrap.

Run inside each function sandbox as ``python3 /var/runtime/bootstrap.py``. It
speaks the AWS Lambda Runtime API (2018-06-01) with the standard library only
and reproduces the behaviour of AWS's own Python runtime (``awslambdaric``):
handler resolution, the context object, JSON marshalling, error shapes, the
``[ERROR] ...`` log line and the root ``logging`` configuration.

Performance notes
- Start-up: only ``os``, ``sys``, ``time`` and the C modules ``_socket`` and
  ``_json`` are imported at module level. The ``json`` package itself pulls in
  ``re``/``enum``/``functools`` (~5-10 ms), so JSON goes straight through the
  C accelerator that ``json`` itself uses (with ``json`` as a fallback). ``http.client`` alone costs ~30 ms of imports
  (email, ssl, ...), so the Runtime API client below is a minimal HTTP/1.1
  client over one keep-alive TCP connection. ``traceback`` is imported on the
  first error only and ``logging`` is configured when the function imports it
  (see ``_LoggingHook``), so a function that never uses it doesn't pay for it.
- Warm invokes: everything that can be computed once (paths, static context
  fields, the JSON encoder, request templates) is computed once; per invoke the
  bootstrap posts the result and asks for the next event in one write (HTTP/1.1
  pipelining) on the same connection, then reads the two answers.
"""

import os
import sys
import time
import _socket

_API_VERSION = b"/2018-06-01/runtime/"
_NEXT_PATH = _API_VERSION + b"invocation/next"
_INIT_ERROR_PATH = _API_VERSION + b"init/error"
_INVOCATION_PREFIX = _API_VERSION + b"invocation/"

_ERROR_LOG_LINE_TERMINATE = "\r"  # one log record per line, as AWS does
_ERROR_LOG_IDENT = "\u00a0"  # AWS replaces leading spaces of trace lines by NBSP

_request_id = ""  # current request id, read by the logging filter


class FaultException(Exception):
    """A runtime-level fault with a ``Runtime.*`` error type."""

    MARSHAL_ERROR = "Runtime.MarshalError"
    UNMARSHAL_ERROR = "Runtime.UnmarshalError"
    USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
    HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
    IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
    BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
    MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
    LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

    def __init__(self, exception_type, msg, trace=None):
        Exception.__init__(self, msg)
        self.msg = msg
        self.exception_type = exception_type
        self.trace = trace


# --------------------------------------------------------------------------
# Runtime API client: minimal HTTP/1.1 over one persistent TCP connection.
# --------------------------------------------------------------------------


class _ConnectionLost(Exception):
    """The peer closed the connection before sending any response byte."""


class RuntimeClient(object):
    def __init__(self, host_port):
        host, sep, port = host_port.rpartition(":")
        if not sep:
            host, port = host_port, "80"
        self.host = host.strip("[]") or "127.0.0.1"
        self.port = int(port)
        self.host_header = host_port.encode("latin-1")
        self.next_head = self._head(b"GET", _NEXT_PATH, None, b"", None)
        self.sock = None
        self.buf = b""
        self.recv = None

    def _connect(self, timeout=None):
        """Connects; `timeout` bounds only the connect (the socket blocks after it)."""
        err = None
        host = self.host
        try:
            # bytes: a str host makes getaddrinfo import encodings.idna (and re,
            # unicodedata, ...), ~15 ms of start-up for nothing.
            host = host.encode("ascii")
        except UnicodeEncodeError:
            pass
        for family, kind, proto, _, addr in _socket.getaddrinfo(
            host, self.port, 0, _socket.SOCK_STREAM
        ):
            s = _socket.socket(family, kind, proto)
            try:
                if timeout is not None:
                    s.settimeout(timeout)
                s.connect(addr)
                s.settimeout(None)
            except OSError as e:
                s.close()
                err = e
                continue
            if family != getattr(_socket, "AF_UNIX", None):
                s.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self.sock = s
            self.recv = s.recv
            self.buf = b""
            return
        raise err or OSError("cannot connect to Runtime API at %s:%d" % (self.host, self.port))

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.recv = None
        self.buf = b""

    def _head(self, method, path, body, extra_headers, content_type):
        if body is None:
            return b"%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
                method, path, self.host_header, extra_headers)
        return b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n" % (
            method, path, self.host_header, content_type, extra_headers, len(body))

    def _exchange(self, head, body, then):
        """Sends `head`, `body` and `then` (a further request, or b"") and reads one response:
        (status, headers{lowercase bytes: bytes}, body bytes)."""
        small = body is None or len(body) < 65536
        payload = head + (body or b"") + then if small else None
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                if payload is not None:
                    self.sock.sendall(payload)
                else:
                    self.sock.sendall(head)
                    self.sock.sendall(body)
                    if then:
                        self.sock.sendall(then)
                return self._read_response()
            except (_ConnectionLost, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed: retry once on a
                # fresh connection (nothing of the response was received).
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise

    def request(self, method, path, body=None, extra_headers=b"", content_type=b"application/json"):
        """Send one request; return (status, headers{lowercase bytes: bytes}, body bytes)."""
        return self._exchange(self._head(method, path, body, extra_headers, content_type), body, b"")

    def _read_response(self):
        recv = self.recv
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = recv(65536)
            if not chunk:
                if buf:
                    raise OSError("Runtime API closed the connection mid-response")
                raise _ConnectionLost()
            buf += chunk
        lines = buf[:end].split(b"\r\n")
        rest = buf[end + 4:]
        status_line = lines[0]
        try:
            status = int(status_line[9:12])
        except ValueError:
            raise OSError("malformed Runtime API response: %r" % status_line[:80])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()

        clen = headers.get(b"content-length")
        if clen is not None:
            n = int(clen)
            if len(rest) >= n:
                body = rest[:n]
                self.buf = rest[n:]
            else:
                body = self._read_exact(rest, n)
                self.buf = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._read_chunked(rest)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
            self.buf = rest
        else:  # body delimited by connection close
            parts = [rest]
            while True:
                chunk = recv(65536)
                if not chunk:
                    break
                parts.append(chunk)
            body = b"".join(parts)
            self.close()
            return status, headers, body

        if headers.get(b"connection", b"").lower() == b"close" or status_line.startswith(b"HTTP/1.0"):
            self.close()
        return status, headers, body

    def _read_exact(self, have, n):
        out = bytearray(n)
        view = memoryview(out)
        got = len(have)
        view[:got] = have
        recv_into = self.sock.recv_into
        while got < n:
            k = recv_into(view[got:], n - got)
            if not k:
                raise OSError("Runtime API closed the connection mid-body")
            got += k
        return bytes(out)

    def _read_chunked(self, buf):
        recv = self.recv
        parts = []
        while True:
            while True:
                i = buf.find(b"\r\n")
                if i >= 0:
                    break
                chunk = recv(65536)
                if not chunk:
                    raise OSError("Runtime API closed the connection mid-body")
                buf += chunk
            size = int(buf[:i].split(b";", 1)[0], 16)
            buf = buf[i + 2:]
            if size == 0:
                # skip trailers up to the empty line
                while True:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        chunk = recv(65536)
                        if not chunk:
                            raise OSError("Runtime API closed the connection mid-body")
                        buf += chunk
                        continue
                    line, buf = buf[:i], buf[i + 2:]
                    if not line:
                        self.buf = buf
                        return b"".join(parts)
            while len(buf) < size + 2:
                chunk = recv(max(65536, size + 2 - len(buf)))
                if not chunk:
                    raise OSError("Runtime API closed the connection mid-body")
                buf += chunk
            parts.append(buf[:size])
            buf = buf[size + 2:]

    # -- Runtime API calls -------------------------------------------------

    def next(self):
        status, headers, body = self._exchange(self.next_head, None, b"")
        return _check_next(status, headers, body)

    def post_then_next(self, path, body, extra_headers, content_type, what):
        """Posts an invocation's result and asks for the next event in the same write (HTTP/1.1
        pipelining), then reads the two answers in order. The runtime does not wait for the
        202 before asking, so it sleeps once per invocation instead of twice, and the server
        reads both requests at once."""
        head = self._head(b"POST", path, body, extra_headers, content_type)
        status, _, resp = self._exchange(head, body, self.next_head)
        _check_post(status, resp, what)
        if self.sock is None:
            # The server closed the connection after the post's answer: ask afresh.
            return self.next()
        try:
            status, headers, body = self._read_response()
        except (_ConnectionLost, ConnectionResetError, BrokenPipeError):
            self.close()
            return self.next()
        except BaseException:
            self.close()
            raise
        return _check_next(status, headers, body)

    def post_result_then_next(self, rid, body, content_type=b"application/json"):
        return self.post_then_next(
            _INVOCATION_PREFIX + rid + b"/response", body, b"", content_type, "response")

    def post_error_then_next(self, rid, error_result):
        body, extra = _error_post(error_result)
        return self.post_then_next(
            _INVOCATION_PREFIX + rid + b"/error", body, extra, b"application/json", "error")

    def post_init_error(self, error_result):
        body, extra = _error_post(error_result)
        status, _, resp = self.request(b"POST", _INIT_ERROR_PATH, body, extra)
        _check_post(status, resp, "init error")


def _check_next(status, headers, body):
    if status != 200:
        raise OSError("Runtime API /next returned %d: %s" % (status, body[:500].decode("utf-8", "replace")))
    return headers, body


def _header_value(s):
    return s.encode("latin-1", "replace").replace(b"\r", b" ").replace(b"\n", b" ")


def _error_post(error_result):
    """An error's body and its error-type header line, as every error post sends them."""
    extra = b"Lambda-Runtime-Function-Error-Type: %s\r\n" % _header_value(error_result["errorType"])
    return _error_json(error_result), extra


def _error_json(error_result):
    return _encode_ascii(error_result).encode("ascii")


def _check_post(status, resp, what):
    if 200 <= status < 300:
        return
    msg = "[nimbus] Runtime API rejected the %s: HTTP %d %s\n" % (
        what, status, resp[:500].decode("utf-8", "replace"))
    sys.stderr.write(msg)
    if status >= 500:
        # AWS: 500 means the environment is in a non-recoverable state; exit.
        sys.stderr.flush()
        os._exit(1)


# --------------------------------------------------------------------------
# Handler loading
# --------------------------------------------------------------------------


def _setup_sys_path(task_root):
    ver = "python%d.%d" % sys.version_info[:2]
    extra = [task_root]
    for p in ("/opt/python/lib/%s/site-packages" % ver, "/opt/python"):
        if os.path.isdir(p):
            extra.append(p)
    for p in extra:
        while p in sys.path:
            sys.path.remove(p)
    sys.path[0:0] = extra


def get_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultException(
            FaultException.MALFORMED_HANDLER_NAME,
            "Bad handler '{}': {}".format(handler, str(e)),
        )
    try:
        if modname.split(".")[0] in sys.builtin_module_names:
            raise FaultException(
                FaultException.BUILT_IN_MODULE_CONFLICT,
                "Cannot use built-in module {} as a handler module".format(modname),
            )
        dotted = modname.replace("/", ".")
        __import__(dotted)
        m = sys.modules[dotted]
    except ImportError as e:
        raise FaultException(
            FaultException.IMPORT_MODULE_ERROR,
            "Unable to import module '{}': {}".format(modname, str(e)),
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultException(
            FaultException.USER_CODE_SYNTAX_ERROR,
            "Syntax error in module '{}': {}".format(modname, str(e)),
            trace,
        )
    try:
        return getattr(m, fname)
    except AttributeError:
        raise FaultException(
            FaultException.HANDLER_NOT_FOUND,
            "Handler '{}' missing on module '{}'".format(fname, modname),
        )


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def make_error(error_message, error_type, stack_trace, invoke_id=None):
    return {
        "errorMessage": error_message if error_message else "",
        "errorType": error_type if error_type else "",
        "requestId": invoke_id if invoke_id is not None else "",
        "stackTrace": stack_trace if stack_trace else [],
    }


def build_fault_result(exc_info, invoke_id=None):
    import traceback

    etype, value, tb = exc_info
    tb_tuples = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(tb)]
    # Drop the bootstrap's own leading frames, as AWS does.
    for i in range(len(tb_tuples)):
        if "/bootstrap.py" not in tb_tuples[i][0]:
            tb_tuples = tb_tuples[i:]
            break
    return make_error(str(value), etype.__name__, traceback.format_list(tb_tuples), invoke_id)


def _replace_line_indentation(line, indent_char, new_indent_char):
    n = len(line) - len(line.lstrip(indent_char))
    return new_indent_char * n + line[n:]


def log_error(error_result):
    """Print the error the way AWS's runtime does: one record, lines joined by \\r."""
    desc = "[ERROR]"
    etype = error_result.get("errorType")
    if etype:
        desc += " " + etype
    emsg = error_result.get("errorMessage")
    if emsg:
        if etype:
            desc += ":"
        desc += " " + emsg
    lines = [desc]
    stack = error_result.get("stackTrace")
    if stack is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack:
            if element == "":
                lines.append("")
            else:
                for tl in element.splitlines():
                    lines.append(_replace_line_indentation(tl, " ", _ERROR_LOG_IDENT))
    sys.stdout.write(_ERROR_LOG_LINE_TERMINATE.join(lines) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------

_FUNCTION_NAME = _FUNCTION_VERSION = _LOG_GROUP_NAME = _LOG_STREAM_NAME = None
_MEMORY_LIMIT = 128


def _load_static_context():
    """The context fields that never change for this instance, from its environment."""
    global _FUNCTION_NAME, _FUNCTION_VERSION, _LOG_GROUP_NAME, _LOG_STREAM_NAME, _MEMORY_LIMIT
    env = os.environ
    _FUNCTION_NAME = env.get("AWS_LAMBDA_FUNCTION_NAME")
    _FUNCTION_VERSION = env.get("AWS_LAMBDA_FUNCTION_VERSION")
    _LOG_GROUP_NAME = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
    _LOG_STREAM_NAME = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
    try:
        _MEMORY_LIMIT = int(env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    except ValueError:
        _MEMORY_LIMIT = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")


def _warm_up():
    """Runs once through what a cold start does first, while nothing waits on this spare. A
    spare forked by the zygote shares the zygote's pages until it writes them, and python
    writes (reference counts) to everything it touches: taking those copy-on-write faults here
    keeps them out of the cold start. The import system's path finder, the compiler, the JSON
    codec and a socket are what loading a handler and reaching the Runtime API use."""
    try:
        from importlib.machinery import PathFinder

        PathFinder.find_spec("_nimbus_warm_up", [os.path.dirname(os.path.abspath(__file__))])
        exec(compile("def handler(event, context):\n    return {'ok': True}\n", "<warm-up>", "exec"), {})
        _loads(b'{"warm": [1, "up", null]}')
        _encode({"warm": [1, "up", None]})
        _socket.getaddrinfo(b"127.0.0.1", 9, 0, _socket.SOCK_STREAM)
        _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM).close()
    except Exception:
        pass


def _receive_assignment(fd):
    """Pre-initialised instance (a Nimbus spare): this interpreter started, loaded the
    bootstrap, and waited before any function was chosen. The function's environment arrives
    on `fd` as KEY=value\\0 entries ended by an empty one, before its code is mounted; one more
    NUL says the code is at /var/task. End of file before that: the spare was let go.

    Returns a client already connected to the Runtime API address the spare was given, so the
    cold start's first request skips the connect (None when there is none)."""
    # While nothing waits on this interpreter, load what nearly every function imports, as
    # AWS's own runtime has by the time a handler is imported.
    try:
        import json  # noqa: F401
    except Exception:
        pass
    _warm_up()
    # The spare's own environment goes now rather than once the function's arrives.
    env = os.environ
    client = None
    api = env.get("AWS_LAMBDA_RUNTIME_API")
    if api:
        client = RuntimeClient(api)
        try:
            # Bounded: a listener whose queue someone else filled must not hold the spare up
            # (the first request then connects as usual).
            client._connect(timeout=0.5)
        except OSError:
            client = None
    tz = env.get("TZ")
    ready = env.get("NIMBUS_READY_LINE")
    env.clear()
    if ready:
        # A started spare counts as ready only once the server reads this line (spares.rs).
        os.write(1, ready.encode() + b"\n")
    data = b""

    def more():
        # One more read of the handoff; end of file (or a broken pipe) before the code's mount
        # means the spare was let go or its assignment failed.
        while True:
            try:
                b = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                b = b""
            if not b:
                os._exit(0)
            return b

    # The environment is ended by an empty entry; it is applied while the code is mounted.
    while True:
        if data[:1] == b"\0":
            end = 0
            break
        end = data.find(b"\0\0")
        if end >= 0:
            end += 1
            break
        data += more()
    for entry in data[:end].split(b"\0"):
        if entry:
            k, _, v = entry.partition(b"=")
            env[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
    if env.get("TZ") != tz:
        time.tzset()
    # One more NUL after that entry: the code is at /var/task.
    while len(data) < end + 2:
        data += more()
    os.close(fd)
    os.chdir(env.get("LAMBDA_TASK_ROOT") or "/var/task")
    # PYTHONPATH is read at interpreter start, which came before the function's environment.
    extra = [p for p in env.get("PYTHONPATH", "").split(":") if p and p not in sys.path]
    sys.path[1:1] = extra
    return client


class CognitoIdentity(object):
    __slots__ = ["cognito_identity_id", "cognito_identity_pool_id"]

    def __init__(self, identity_id=None, pool_id=None):
        self.cognito_identity_id = identity_id
        self.cognito_identity_pool_id = pool_id

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id, self.cognito_identity_pool_id)


class Client(object):
    __slots__ = ["installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name"]

    def __repr__(self):
        return "Client([%s])" % ",".join("%s=%s" % (k, getattr(self, k)) for k in self.__slots__)


class ClientContext(object):
    __slots__ = ["custom", "env", "client"]

    def __repr__(self):
        return "ClientContext([custom=%s,env=%s,client=%s])" % (self.custom, self.env, self.client)


def _obj_from_dict(cls, d):
    if d is None:
        return None
    obj = cls()
    get = d.get if isinstance(d, dict) else (lambda k, default=None: default)
    for field in cls.__slots__:
        setattr(obj, field, get(field, None))
    return obj


class LambdaContext(object):
    def __init__(self, invoke_id, client_context, cognito_identity, deadline_ms, invoked_function_arn):
        self.aws_request_id = invoke_id
        self.log_group_name = _LOG_GROUP_NAME
        self.log_stream_name = _LOG_STREAM_NAME
        self.function_name = _FUNCTION_NAME
        self.memory_limit_in_mb = _MEMORY_LIMIT
        self.function_version = _FUNCTION_VERSION
        self.invoked_function_arn = invoked_function_arn
        cc = _obj_from_dict(ClientContext, client_context)
        if cc is not None:
            cc.client = _obj_from_dict(Client, cc.client)
        self.client_context = cc
        if cognito_identity:
            self.identity = CognitoIdentity(
                cognito_identity.get("cognitoIdentityId"),
                cognito_identity.get("cognitoIdentityPoolId"),
            )
        else:
            self.identity = CognitoIdentity()
        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        delta = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return delta if delta > 0 else 0

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,"
            "function_name=%s,memory_limit_in_mb=%s,function_version=%s,"
            "invoked_function_arn=%s,client_context=%s,identity=%s])"
            % (self.aws_request_id, self.log_group_name, self.log_stream_name,
               self.function_name, self.memory_limit_in_mb, self.function_version,
               self.invoked_function_arn, self.client_context, self.identity)
        )


def _parse_json_header(value, name):
    try:
        return _loads(value)
    except Exception as e:
        raise FaultException(
            FaultException.LAMBDA_CONTEXT_UNMARSHAL_ERROR,
            "Unable to parse {} JSON: {}".format(name, str(e)),
        )


# --------------------------------------------------------------------------
# Marshalling
# --------------------------------------------------------------------------


def _json_default(obj):
    # decimal.Decimal (e.g. from boto3's DynamoDB deserializer) without
    # importing the decimal module up front.
    cls = type(obj)
    if cls.__name__ == "Decimal" and cls.__module__ in ("decimal", "_decimal", "_pydecimal"):
        if obj.is_nan():
            return float("nan")
        if obj == obj.to_integral_value() and not obj.is_infinite():
            return int(obj)
        return float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % obj.__class__.__name__)


def _make_json():
    """(loads, encode, encode_ascii) built on the _json C accelerator, exactly
    as json.loads/json.dumps use it, without importing the json package."""
    import _json

    class _DecodeContext(object):
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        memo = {}

        @staticmethod
        def parse_constant(name):
            return {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}[name]

    scan = _json.make_scanner(_DecodeContext)
    make_encoder = _json.make_encoder
    basestring = _json.encode_basestring
    basestring_ascii = _json.encode_basestring_ascii
    ws = " \t\n\r"

    def loads(data):
        try:
            s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            s = s.strip(ws)
            obj, end = scan(s, 0)
            if end == len(s):
                return obj
        except Exception:  # StopIteration, UnicodeDecodeError, SystemError, ...
            pass
        import json  # slow path: the canonical error message (or BOM/UTF-16 input)

        return json.loads(data)

    def encode(obj):
        return "".join(make_encoder({}, _json_default, basestring, None, ": ", ", ", False, False, True)(obj, 0))

    def encode_ascii(obj):
        return "".join(make_encoder({}, _json_default, basestring_ascii, None, ": ", ", ", False, False, True)(obj, 0))

    probe = {"a": [1, 2.5, "\u00e9\n", None, True, {"b": -3}]}
    if (encode(probe) != '{"a": [1, 2.5, "\u00e9\\n", null, true, {"b": -3}]}'
            or encode_ascii(probe) != '{"a": [1, 2.5, "\\u00e9\\n", null, true, {"b": -3}]}'
            or loads(b' {"a": [1, 2.5, "\\u00e9", null, true]} ') != {"a": [1, 2.5, "\u00e9", None, True]}):
        raise ImportError("unexpected _json behaviour")
    return loads, encode, encode_ascii


try:
    _loads, _encode, _encode_ascii = _make_json()
except Exception:  # another interpreter or a changed _json API: use json itself
    import json

    _loads = json.loads
    _encode = json.JSONEncoder(ensure_ascii=False, default=_json_default).encode
    _encode_ascii = json.JSONEncoder(default=_json_default).encode


def marshal_response(response):
    """Return (body bytes, content type), like awslambdaric's marshaller."""
    if isinstance(response, bytes):
        return response, b"application/unknown"
    try:
        s = _encode(response)
    except Exception as e:
        raise FaultException(FaultException.MARSHAL_ERROR, "Unable to marshal response: {}".format(str(e)))
    try:
        return s.encode("utf-8"), b"application/json"
    except UnicodeEncodeError:  # lone surrogates: fall back to \\u escapes
        return _encode_ascii(response).encode("ascii"), b"application/json"


# --------------------------------------------------------------------------
# Logging: configured like AWS (root logger, handler writing to stdout with
# the request id), but only once the function imports `logging`.
# --------------------------------------------------------------------------


def _configure_logging(logging):
    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            try:
                sys.stdout.write(self.format(record))
            except Exception:
                self.handleError(record)

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id
            return True

    logging.Formatter.converter = time.gmtime
    handler = LambdaLoggerHandler()
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S",
    ))
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        level = {"TRACE": "DEBUG"}.get(level.upper(), level.upper())
        if level in logging._nameToLevel:
            root.setLevel(level)
    root.addHandler(handler)


class _LoggingHook(object):
    """meta_path finder that configures `logging` right after it is first imported."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "logging":
            return None
        try:
            sys.meta_path.remove(cls)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_and_configure(module):
            exec_module(module)
            _configure_logging(module)

        try:
            loader.exec_module = exec_and_configure
        except (AttributeError, TypeError):
            return spec
        return spec


def _install_logging():
    if "logging" in sys.modules:
        _configure_logging(sys.modules["logging"])
    else:
        sys.meta_path.insert(0, _LoggingHook)


# --------------------------------------------------------------------------
# Main loop
# --------------------------------------------------------------------------

_SAFE_ID_CHARS = b"-_.~"


class _TraceVariable(object):
    """``_X_AMZN_TRACE_ID``, which changes with every invocation, kept without growing the process.

    Assigning ``os.environ[...]`` goes through glibc's setenv, which keeps every distinct value it
    was ever given for the life of the process (about 140 bytes each): with a new trace id per
    invocation a warm instance grew by that much per invocation, without bound, until its memory
    limit killed it. Here the variable's C entry is one buffer of this object's, given to putenv
    once and rewritten in place, and ``os.environ``'s own mapping is updated beside it: python
    code (``os.environ``, ``os.getenv``), C code (``getenv``) and child processes all see the
    current id. Where that cannot be done (no ctypes, a value longer than the buffer, a python
    whose ``os.environ`` has no mapping) the assignment is used as before.

    The first invocation uses the assignment too unless ctypes is already loaded (it is in
    every instance the zygote forks), so a cold start never waits for the import."""

    KEY = "_X_AMZN_TRACE_ID"
    CAP = 1024

    def __init__(self):
        self.buf = None  # the ctypes buffer; False: not possible here
        self.installed = False  # whether the C entry is the buffer
        self.value = None  # what was last put in os.environ's mapping
        self.uses = 0

    def _setup(self):
        try:
            import ctypes

            environ = os.environ
            self.data = environ._data
            self.key = environ.encodekey(self.KEY)
            self.encode = environ.encodevalue
            self.putenv = ctypes.CDLL(None, use_errno=True).putenv
            self.putenv.argtypes = (ctypes.c_char_p,)
            self.prefix = self.key + b"="
            self.buf = ctypes.create_string_buffer(self.CAP)
        except Exception:
            self.buf = False

    def set(self, trace):
        """`trace`: the header's bytes, or None when the invocation has none."""
        environ = os.environ
        if trace is None:
            if self.KEY in environ:
                del environ[self.KEY]
            self.installed = False
            return
        self.uses += 1
        if self.buf is None and ("ctypes" in sys.modules or self.uses > 1):
            self._setup()
        buf = self.buf
        if not buf or len(self.prefix) + len(trace) >= self.CAP:
            environ[self.KEY] = trace.decode("latin-1")
            self.installed = False
            return
        data = self.data
        if data.get(self.key) is not self.value:
            # Someone else set or removed it since (through os.environ): the C entry is theirs.
            self.installed = False
        buf.value = self.prefix + trace
        if not self.installed:
            if self.putenv(buf) != 0:
                environ[self.KEY] = trace.decode("latin-1")
                return
            self.installed = True
        self.value = self.encode(trace.decode("latin-1"))
        data[self.key] = self.value


def _quote_id(rid):
    if rid.translate(None, _SAFE_ID_CHARS).isalnum():
        return rid
    from urllib.parse import quote_from_bytes

    return quote_from_bytes(rid, safe="").encode("ascii")


def run():
    global _request_id

    # Every write reaches the log collector promptly (AWS flushes each write).
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except Exception:
            pass

    env = os.environ
    handoff = env.get("NIMBUS_HANDOFF_FD")
    client = None
    if handoff:
        client = _receive_assignment(int(handoff))
    _load_static_context()
    api = env["AWS_LAMBDA_RUNTIME_API"]
    if client is None or client.host_header != api.encode("latin-1"):
        if client is not None:
            client.close()
        client = RuntimeClient(api)
    task_root = env.get("LAMBDA_TASK_ROOT") or os.getcwd()
    handler_name = env.get("_HANDLER", "")

    _install_logging()
    try:
        _setup_sys_path(task_root)
        request_handler = get_handler(handler_name)
    except FaultException as e:
        error_result = make_error(e.msg, e.exception_type, e.trace)
        log_error(error_result)
        client.post_init_error(error_result)
        sys.exit(1)
    except Exception:
        error_result = build_fault_result(sys.exc_info())
        log_error(error_result)
        client.post_init_error(error_result)
        sys.exit(1)

    stdout_flush = sys.stdout.flush
    stderr_flush = sys.stderr.flush
    loads = _loads
    now = time.time
    encode = _encode
    set_trace = _TraceVariable().set

    headers, body = client.next()
    while True:
        get = headers.get
        rid_b = get(b"lambda-runtime-aws-request-id", b"")
        rid = rid_b.decode("latin-1")
        _request_id = rid
        qrid = _quote_id(rid_b)

        set_trace(get(b"lambda-runtime-trace-id"))

        error_result = None
        result = None
        result_type = b"application/json"
        try:
            cc = get(b"lambda-runtime-client-context")
            ci = get(b"lambda-runtime-cognito-identity")
            deadline = get(b"lambda-runtime-deadline-ms")
            try:
                deadline = int(deadline) if deadline else int(now() * 1000) + 3000
            except ValueError:
                deadline = int(now() * 1000) + 3000
            context = LambdaContext(
                rid,
                _parse_json_header(cc, "Client Context") if cc else None,
                _parse_json_header(ci, "Cognito Identity") if ci else None,
                deadline,
                get(b"lambda-runtime-invoked-function-arn", b"").decode("utf-8", "replace") or None,
            )
            ctype = get(b"content-type")
            if ctype is None or b"json" in ctype:
                try:
                    event = loads(body)
                except Exception as e:
                    raise FaultException(
                        FaultException.UNMARSHAL_ERROR, "Unable to unmarshal input: {}".format(str(e)))
            else:
                event = body
            response = request_handler(event, context)
            if response is None:
                result = b"null"
            elif type(response) is dict or type(response) is list or type(response) is str:
                try:
                    result = encode(response).encode("utf-8")
                except Exception:
                    result, result_type = marshal_response(response)
            else:
                result, result_type = marshal_response(response)
        except FaultException as e:
            error_result = make_error(e.msg, e.exception_type, e.trace, rid)
        except Exception:
            error_result = build_fault_result(sys.exc_info(), rid)

        # Everything the invoke printed goes out before its response.
        stdout_flush()
        stderr_flush()
        if error_result is None:
            headers, body = client.post_result_then_next(qrid, result, result_type)
        else:
            log_error(error_result)
            headers, body = client.post_error_then_next(qrid, error_result)


if __name__ == "__main__":
    run()
