// berth's JavaScript and TypeScript test harness, run as `node -e <this>` with a JSON spec
// on stdin:
//   {"language": "javascript"|"typescript", "code": str|null, "path": str|null,
//    "entrypoint": str|null, "cases": [{"i": int, "input": any}], "timeout_s": float,
//    "max_stdout": int, "max_value": int, "modules": {file: {"code"|"js", "map"?}}|null}
// The code is loaded (TypeScript type-checked and compiled) once; every case then runs in
// a fresh V8 context (its own globals and built-ins, its own copy of every module of the
// candidate's), under a deadline that covers its promises and timers too. No object of
// this process ever reaches a case: Node's built-in modules are not offered (`require`
// loads the candidate's own files and packages, inside the context), host functions are
// reached only through closures, and whatever they throw is replaced by an error of the
// case's own realm. So a case cannot write to this process's stdout, or change what the
// next case sees. Its console goes to a per-case buffer. Lines out:
//   {"ready": true, "modules": {...}}   loaded; the supervisor passes `modules` back if it
//                                       must start this harness again (a case crashed it)
//   {"compiled": true, "modules": {...}} TypeScript compiled; nothing follows: the cases run
//                                       in a fresh start given `modules`, so the compiler's
//                                       memory is not in the way of theirs
//   {"compile_error": str}              nothing follows
//   {"i", "status": "ok"|"error"|"timeout", "value", "error", "stdout", "duration_ms"}
// Expected values never come here: the supervisor compares.
'use strict';
const fs = require('fs');
const vm = require('vm');
const path = require('path');
const Module = require('module');

const TAG_GID_BASE = 2100000000;
const spec = JSON.parse(fs.readFileSync(0, 'utf8'));
// Bytes of a case's value as sent (JSON, non-ASCII escaped); the supervisor sets it.
const MAX_VALUE = Math.max(1024, Number(spec.max_value) || 256 * 1024);
const cwd = process.cwd();
const typescript = spec.language === 'typescript';
const mainFile = path.resolve(cwd, spec.path || (typescript ? 'solution.ts' : 'solution.js'));
const timeoutMs = Math.max(1, Math.round(spec.timeout_s * 1000));

function writeAll(text) {
  const data = Buffer.from(text);
  let off = 0;
  while (off < data.length) {
    try {
      off += fs.writeSync(1, data, off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
    }
  }
}

// One line of ASCII JSON (no byte of a record can be mistaken for another line).
function ascii(text) {
  return text.replace(/[\u007f-\uffff]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

function emit(record) {
  writeAll(ascii(JSON.stringify(record)) + '\n');
}

// ---- loading -------------------------------------------------------------------------

function loadTypeScript() {
  const tries = [() => require('typescript'), () => Module.createRequire(mainFile)('typescript')];
  for (const place of ['/usr/share/nodejs', '/usr/lib/nodejs', '/usr/lib/node_modules', '/usr/local/lib/node_modules']) {
    tries.push(() => require(path.join(place, 'typescript')));
  }
  for (const attempt of tries) {
    try {
      return attempt();
    } catch (_) {}
  }
  return null;
}

function lineOf(text, pos) {
  let line = 1;
  for (let k = 0; k < pos && k < text.length; k++) if (text.charCodeAt(k) === 10) line++;
  return line;
}

// What a case's context offers, as types: checking against these few lines takes a
// fifth of the time of Node's own type definitions, which are used only when the code
// needs them (it names something the prelude lacks).
const PRELUDE_FILE = '/berth-harness/prelude.d.ts';
const PRELUDE = `
declare var console: { log(...data: any[]): void; info(...data: any[]): void; warn(...data: any[]): void;
  error(...data: any[]): void; debug(...data: any[]): void; trace(...data: any[]): void; dir(...data: any[]): void };
declare function setTimeout(handler: (...args: any[]) => void, timeout?: number, ...args: any[]): number;
declare function setInterval(handler: (...args: any[]) => void, timeout?: number, ...args: any[]): number;
declare function clearTimeout(id?: number): void;
declare function clearInterval(id?: number): void;
declare function queueMicrotask(callback: () => void): void;
declare var performance: { now(): number };
`;
// "Cannot find name / module / namespace": the code wants Node's types.
const NEEDS_NODE_TYPES = new Set([2304, 2307, 2503, 2580, 2591, 2592, 2688, 2875]);

// Type-checks and compiles the TypeScript program rooted at the main file (siblings it
// imports come from disk); returns {file: {js, map}} or throws {compileError}.
function compileTypeScript(ts, mainSource) {
  const prelude = checkTypeScript(ts, mainSource, null);
  if (prelude.errors.length && prelude.errors.some((d) => NEEDS_NODE_TYPES.has(d.code))) {
    const nodeTypes = ['/usr/share/nodejs/@types/node/index.d.ts', '/usr/lib/node_modules/@types/node/index.d.ts']
      .find((p) => fs.existsSync(p));
    if (nodeTypes) return finishTypeScript(ts, checkTypeScript(ts, mainSource, nodeTypes));
  }
  return finishTypeScript(ts, prelude);
}

function checkTypeScript(ts, mainSource, nodeTypes) {
  const options = {
    target: ts.ScriptTarget.ES2020,
    module: ts.ModuleKind.CommonJS,
    lib: ['lib.es2020.d.ts'],
    sourceMap: true,
    esModuleInterop: true,
    skipLibCheck: true,
    noEmitOnError: false,
    allowJs: true,
    types: [],
  };
  const roots = [mainFile, nodeTypes || PRELUDE_FILE];
  const virtual = new Map([[PRELUDE_FILE, PRELUDE]]);
  if (mainSource !== null) virtual.set(mainFile, mainSource);
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  const readFile = host.readFile.bind(host);
  host.getSourceFile = (name, version, onError, fresh) =>
    virtual.has(path.resolve(name))
      ? ts.createSourceFile(name, virtual.get(path.resolve(name)), version, true)
      : getSourceFile(name, version, onError, fresh);
  host.fileExists = (name) => virtual.has(path.resolve(name)) || fileExists(name);
  host.readFile = (name) => (virtual.has(path.resolve(name)) ? virtual.get(path.resolve(name)) : readFile(name));
  const program = ts.createProgram(roots, options, host);
  const ours = program
    .getSourceFiles()
    .filter((sf) => !sf.isDeclarationFile && !sf.fileName.includes('/node_modules/') && !sf.fileName.startsWith('/usr/'));
  const errors = ts
    .getPreEmitDiagnostics(program)
    .filter((d) => d.category === ts.DiagnosticCategory.Error && (!d.file || ours.includes(d.file)));
  return { program, ours, errors };
}

function finishTypeScript(ts, { program, ours, errors }) {
  if (errors.length) {
    const d = errors[0];
    const text = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    let where = '';
    if (d.file) {
      const line = d.file.getLineAndCharacterOfPosition(d.start || 0).line + 1;
      const file = path.resolve(d.file.fileName);
      where = file === mainFile ? ` (line ${line})` : ` (${path.relative(cwd, file)} line ${line})`;
    }
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
    throw { compileError: `TS${d.code}: ${text}${where}${more}` };
  }
  const modules = {};
  for (const sf of ours) {
    const out = {};
    program.emit(sf, (name, text) => {
      if (name.endsWith('.map')) out.map = text;
      else if (name.endsWith('.js')) out.js = text;
    });
    if (out.js !== undefined) modules[path.resolve(sf.fileName)] = out;
  }
  return modules;
}

function syntaxErrorText(e, file) {
  const first = String(e.stack || '').split('\n')[0];
  const m = /:(\d+)$/.exec(first);
  const line = m && first.startsWith(file) ? ` (line ${m[1]})` : '';
  return `${e.name}: ${e.message}${line}`;
}

// The module wrapper: CommonJS arguments in, and a lookup of the module's own top-level
// names out (direct eval sees them), for finding the entrypoint.
const WRAP_HEAD = '(function (exports, require, module, __filename, __dirname) {';
const WRAP_TAIL = '\n;return function (__berth_name) { try { return eval(__berth_name); } catch (_) { return undefined; } };\n})';

// file -> {script, map (a module.SourceMap or null), names}
const compiled = new Map();
// file -> {code?, js?, map?} as loaded once (what a restart is given back)
const modules = spec.modules || {};

function topLevelNames(source) {
  const names = new Set(['solution', 'Solution']);
  const patterns = [
    /^(?:export\s+)?(?:default\s+)?(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)/gm,
    /^(?:export\s+)?(?:const|let|var)\s+([A-Za-z_$][\w$]*)\s*=/gm,
    /^(?:export\s+)?(?:default\s+)?class\s+([A-Za-z_$][\w$]*)/gm,
  ];
  for (const re of patterns) for (const m of source.matchAll(re)) names.add(m[1]);
  return [...names];
}

function compileModule(file, entry) {
  // A `#!` line is allowed at the top of a file, not inside the wrapper.
  const js = (entry.js !== undefined ? entry.js : entry.code).replace(/^#![^\n]*/, '');
  let script;
  try {
    script = new vm.Script(WRAP_HEAD + js + WRAP_TAIL, { filename: file });
  } catch (e) {
    if (e instanceof SyntaxError && entry.js === undefined && /^\s*(import|export)\b/m.test(js)) {
      // An ES module written as JavaScript: compiled to CommonJS where TypeScript is there.
      const ts = loadTypeScript();
      if (ts) {
        const out = ts.transpileModule(js, {
          fileName: file,
          compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, sourceMap: true, allowJs: true },
        });
        return compileModule(file, { js: out.outputText, map: out.sourceMapText, code: entry.code });
      }
    }
    throw { compileError: syntaxErrorText(e, file) };
  }
  let map = null;
  if (entry.map) {
    try {
      map = new Module.SourceMap(JSON.parse(entry.map));
    } catch (_) {}
  }
  const record = { script, map, names: topLevelNames(js) };
  compiled.set(file, record);
  modules[file] = entry;
  return record;
}

function load() {
  if (spec.modules) {
    for (const [file, entry] of Object.entries(spec.modules)) compileModule(file, entry);
    return;
  }
  let source = spec.code;
  if (source === null || source === undefined) {
    try {
      source = fs.readFileSync(mainFile, 'utf8');
    } catch (e) {
      throw { compileError: `cannot read ${spec.path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}` };
    }
  }
  if (typescript) {
    const ts = loadTypeScript();
    if (!ts) {
      throw {
        compileError:
          'TypeScript is not installed in this sandbox (use the node template, or install the typescript package)',
      };
    }
    for (const [file, entry] of Object.entries(compileTypeScript(ts, spec.code === null || spec.code === undefined ? null : source))) {
      compileModule(file, entry);
    }
    if (!compiled.has(mainFile)) throw { compileError: `TypeScript produced no output for ${mainFile}` };
    return;
  }
  compileModule(mainFile, { code: source });
  loadSiblings(mainFile, new Set([mainFile]));
}

// The candidate's own files that a module names statically (`require('./x')`, `import …
// from './x'`), compiled now, so a restart is given them as they were loaded.
function loadSiblings(file, seen) {
  const entry = modules[file];
  const source = entry && (entry.code !== undefined ? entry.code : entry.js);
  if (typeof source !== 'string' || seen.size > 200) return;
  const names = /(?:require\s*\(\s*|\bfrom\s+|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const m of source.matchAll(names)) {
    let found = null;
    try {
      found = candidateModule(file, m[1]);
    } catch (_) {}
    if (found && found.record && !seen.has(found.file)) {
      seen.add(found.file);
      loadSiblings(found.file, seen);
    }
  }
}

// A package the candidate's code names (`require('lodash')`), from a node_modules folder
// beside it or above: its main file, loaded like the candidate's own files.
function packageFile(fromFile, id) {
  if (!/^(@[\w.-]+\/)?[\w.-]+(\/[\w./-]+)?$/.test(id)) return null;
  for (let dir = path.dirname(fromFile); ; dir = path.dirname(dir)) {
    const root = path.join(dir, 'node_modules', id);
    let main = root;
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
      if (typeof pkg.main === 'string') main = path.join(root, pkg.main);
    } catch (_) {}
    const found = candidateModule(path.join(dir, 'x'), main);
    if (found) return found;
    if (dir === '/') return null;
  }
}

// A module file of the candidate's, compiled once, found like Node's resolver would.
function candidateModule(fromFile, id) {
  const base = path.resolve(path.dirname(fromFile), id);
  const tries = [base, base + '.ts', base + '.js', base + '.json', base + '/index.ts', base + '/index.js'];
  for (const file of tries) {
    if (compiled.has(file)) return { file, record: compiled.get(file) };
  }
  for (const file of tries) {
    let stat;
    try {
      stat = fs.statSync(file);
    } catch (_) {
      continue;
    }
    if (!stat.isFile()) continue;
    const text = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.json')) return { file, json: text };
    if (file.endsWith('.ts')) {
      const ts = loadTypeScript();
      if (!ts) throw new Error(`cannot load ${id}: TypeScript is not installed`);
      const out = ts.transpileModule(text, {
        fileName: file,
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020, sourceMap: true },
      });
      return { file, record: compileModule(file, { js: out.outputText, map: out.sourceMapText }) };
    }
    return { file, record: compileModule(file, { code: text }) };
  }
  return null;
}

// ---- the code that lives in each case's context ------------------------------------------

// Built in the case's own context before the candidate's code runs, from that context's
// intrinsics (captured here, so the candidate replacing them changes nothing below). Host
// functions are reached only through these closures, never handed to the candidate.
const BOOT = new vm.Script(`(function (host) {
  'use strict';
  const { write: write_, resolve, settle: settle_, setTimer: setTimer_, clearTimer: clearTimer_,
    takeTimer: takeTimer_, cwd, now: now_ } = host;
  // Calls a host function; whatever it throws (even a stack overflow inside it, which
  // would be the host's error object, and so a way to the host's Function) becomes an
  // error of this context.
  const host_ = (call) => { try { return call(); } catch (_) { throw new RangeError('berth harness call failed'); } };
  const write = (s) => host_(() => write_(s));
  const settle = (s) => host_(() => settle_(s));
  const setTimer = (ms, repeat) => host_(() => setTimer_(ms, repeat));
  const clearTimer = (id) => host_(() => clearTimer_(id));
  const takeTimer = () => host_(() => takeTimer_());
  const now = () => host_(() => now_());
  const J = JSON, stringify = J.stringify, parse = J.parse;
  const O = Object, keys = O.keys, getProto = O.getPrototypeOf, defineProperty = O.defineProperty;
  const own = O.prototype.hasOwnProperty, fnToString = Function.prototype.toString;
  const isArray = Array.isArray, ObjProto = O.prototype, StrFn = String, NumIsNaN = Number.isNaN;
  const MapC = Map, SetC = Set, DateC = Date, RegExpC = RegExp, ErrorC = Error, BigIntC = BigInt;
  const dateISO = Date.prototype.toISOString, dateTime = Date.prototype.getTime;
  const typedProto = getProto(Uint8Array.prototype);
  const apply = Reflect.apply, ownKeys = Reflect.ownKeys;
  const mapEntries = Map.prototype.entries, setValues = Set.prototype.values;

  function show(v) {
    if (typeof v === 'string') return v;
    try { return toJSONText(v, 0, []); } catch (_) { return StrFn(v); }
  }
  const log = (...args) => { let s = ''; for (let k = 0; k < args.length; k++) s += (k ? ' ' : '') + show(args[k]); write(s + '\\n'); };
  const consoleObj = { log, info: log, warn: log, error: log, debug: log, trace: log, dir: log };
  class ExitCalled extends ErrorC {}
  const processObj = {
    argv: ['node', 'solution'], env: {}, platform: 'linux', cwd: () => cwd,
    stdout: { write: (s) => { write(StrFn(s)); return true; } },
    stderr: { write: (s) => { write(StrFn(s)); return true; } },
    exit: (code) => { const e = new ExitCalled('process.exit(' + (code === undefined ? '' : StrFn(code)) + ') was called'); e.name = 'ProcessExit'; throw e; },
    nextTick: (fn, ...args) => Promise.resolve().then(() => fn(...args)),
    hrtime: { bigint: () => BigIntC(Math.round(now() * 1e6)) },
    memoryUsage: () => ({ heapUsed: 0 }),
  };
  const timers = {};
  const later = (repeat) => (fn, ms, ...args) => {
    if (typeof fn !== 'function') throw new TypeError('the callback must be a function');
    const id = setTimer(+ms || 0, repeat);
    timers[id] = () => fn(...args);
    return id;
  };
  const cancel = (id) => { if (typeof id === 'number' && timers[id]) { delete timers[id]; clearTimer(id); } };
  const g = globalThis;
  g.console = consoleObj;
  g.process = processObj;
  g.setTimeout = later(false); g.setInterval = later(true); g.setImmediate = (fn, ...a) => g.setTimeout(fn, 0, ...a);
  g.clearTimeout = cancel; g.clearInterval = cancel; g.clearImmediate = cancel;
  g.queueMicrotask = (fn) => { Promise.resolve().then(fn); };
  g.global = g;
  g.performance = { now: () => now() };

  const cache = new MapC();
  function makeRequire(from) {
    return function require(id) {
      const found = host_(() => resolve(from, StrFn(id)));
      if (found.error !== undefined) { const e = new ErrorC(StrFn(found.error)); e.code = StrFn(found.code); throw e; }
      if (cache.has(found.file)) return cache.get(found.file).exports;
      const module = { exports: {}, id: found.file, filename: found.file, loaded: false, children: [] };
      cache.set(found.file, module);
      if (found.json !== undefined) { module.exports = parse(found.json); return module.exports; }
      const lookup = found.wrapper.call(module.exports, module.exports, makeRequire(found.file), module,
        found.file, found.dir);
      module.lookup = lookup;
      module.loaded = true;
      return module.exports;
    };
  }

  function describe(e) {
    try {
      if (e instanceof ErrorC || (e && typeof e === 'object' && typeof e.stack === 'string')) {
        return { text: StrFn(e.name || 'Error') + ': ' + StrFn(e.message), stack: StrFn(e.stack || '') };
      }
      return { text: 'Uncaught: ' + show(e), stack: '' };
    } catch (_) {
      return { text: 'Uncaught: an exception that cannot be shown', stack: '' };
    }
  }

  function isClass(f) { try { return /^class\\b/.test(apply(fnToString, f, [])); } catch (_) { return false; } }

  function paramNames(fn) {
    let src;
    try { src = apply(fnToString, fn, []); } catch (_) { return []; }
    src = src.replace(/\\/\\*[\\s\\S]*?\\*\\//g, '').replace(/\\/\\/[^\\n]*/g, '');
    let list;
    const arrow = /^(?:async\\s*)?([A-Za-z_$][\\w$]*)\\s*=>/.exec(src);
    if (arrow) list = arrow[1];
    else {
      const open = src.indexOf('(');
      if (open < 0) return [];
      let depth = 0, k = open, quote = null;
      for (; k < src.length; k++) {
        const c = src[k];
        if (quote) { if (c === '\\\\') k++; else if (c === quote) quote = null; continue; }
        if (c === '"' || c === "'" || c === '\`') quote = c;
        else if (c === '(' || c === '[' || c === '{') depth++;
        else if (c === ')' || c === ']' || c === '}') { depth--; if (depth === 0) break; }
      }
      list = src.slice(open + 1, k);
    }
    const names = [];
    let depth = 0, start = 0;
    for (let k = 0; k <= list.length; k++) {
      const c = list[k];
      if (c === '(' || c === '[' || c === '{') depth++;
      else if (c === ')' || c === ']' || c === '}') depth--;
      else if ((c === ',' && depth === 0) || k === list.length) {
        const part = list.slice(start, k).trim().replace(/^\\.\\.\\./, '');
        const m = /^[A-Za-z_$][\\w$]*/.exec(part);
        if (part) names.push(m ? m[0] : null);
        start = k + 1;
      }
    }
    return names;
  }

  function entry(main, names, wanted) {
    const lookup = main.lookup || (() => undefined);
    const exp = main.exports;
    const get = (n) => { const v = /^[A-Za-z_$][\\w$]*$/.test(n) ? lookup(n) : undefined; if (v !== undefined) return v;
      if (exp && (typeof exp === 'object' || typeof exp === 'function') && own.call(exp, n)) return exp[n];
      return undefined; };
    const plain = (f) => typeof f === 'function' && !isClass(f);
    const method = (C, m) => { const self = new C(); const f = self[m];
      if (typeof f !== 'function') throw lookupError('class ' + StrFn(C.name) + ' has no method ' + m);
      return { fn: f, self }; };
    if (wanted) {
      const dot = wanted.indexOf('.');
      if (dot > 0) {
        const C = get(wanted.slice(0, dot));
        if (typeof C !== 'function') throw lookupError('no class named ' + stringify(wanted.slice(0, dot)) + ' in the code');
        return method(C, wanted.slice(dot + 1));
      }
      const f = get(wanted);
      if (typeof f !== 'function') throw lookupError('no function named ' + stringify(wanted) + ' in the code');
      return { fn: f, self: undefined };
    }
    const solution = get('solution');
    if (plain(solution)) return { fn: solution, self: undefined };
    const found = [];
    for (const n of names) { if (n[0] === '_') continue; const f = get(n); if (plain(f) && !found.includes(f)) found.push(f); }
    if (plain(exp) && !found.includes(exp)) found.push(exp);
    if (exp && typeof exp === 'object') for (const n of keys(exp)) { const f = exp[n]; if (n[0] !== '_' && plain(f) && !found.includes(f)) found.push(f); }
    if (found.length === 1) return { fn: found[0], self: undefined };
    const C = get('Solution');
    if (typeof C === 'function') {
      const ms = O.getOwnPropertyNames(C.prototype || {}).filter((m) => m !== 'constructor' && m[0] !== '_' &&
        typeof O.getOwnPropertyDescriptor(C.prototype, m).value === 'function');
      if (ms.length === 1) return method(C, ms[0]);
    }
    throw lookupError('no entrypoint: define \`solution\`, one top-level function, or a class Solution with one public method (or name it in \`entrypoint\`)');
  }
  function lookupError(message) { const e = new ErrorC(message); e.name = 'LookupError'; return e; }

  function argsFor(fn, input) {
    if (isArray(input)) return input;
    if (input !== null && typeof input === 'object') {
      const names = paramNames(fn);
      const given = keys(input);
      if (given.length && given.every((k) => names.includes(k))) return names.map((n) => (n === null ? undefined : input[n]));
    }
    return [input];
  }

  // The documented mapping of JavaScript values to JSON text: undefined, functions and
  // symbols -> null; NaN and infinities -> "NaN", "Infinity", "-Infinity"; BigInt -> the
  // exact integer; Set -> array (sorted when all numbers or all strings); Map -> object
  // (array of [key, value] pairs when a key is not a string or number); Date -> ISO string;
  // typed arrays -> arrays; class instances -> their own enumerable fields not starting
  // with "_"; objects with toJSON -> what it returns.
  function toJSONText(v, depth, seen) {
    if (depth > 100) throw new ErrorC('the value is nested more than 100 levels deep');
    switch (typeof v) {
      case 'undefined': case 'function': case 'symbol': return 'null';
      case 'boolean': return v ? 'true' : 'false';
      case 'string': return stringify(v);
      case 'bigint': return StrFn(v);
      case 'number':
        if (NumIsNaN(v)) return '"NaN"';
        if (v === Infinity) return '"Infinity"';
        if (v === -Infinity) return '"-Infinity"';
        return stringify(v === 0 ? 0 : v);
    }
    if (v === null) return 'null';
    if (seen.includes(v)) throw new ErrorC('the value is circular');
    seen.push(v);
    try {
      if (v instanceof DateC) { const t = apply(dateTime, v, []); return NumIsNaN(t) ? 'null' : stringify(apply(dateISO, v, [])); }
      if (v instanceof RegExpC) return stringify(StrFn(v));
      if (v instanceof ErrorC) return stringify(StrFn(v.name) + ': ' + StrFn(v.message));
      if (v instanceof Number || v instanceof String || v instanceof Boolean) return toJSONText(v.valueOf(), depth + 1, seen);
      if (typeof v.toJSON === 'function') return toJSONText(v.toJSON(), depth + 1, seen);
      const list = (items) => '[' + items.map((x) => toJSONText(x, depth + 1, seen)).join(',') + ']';
      if (isArray(v)) { const items = []; for (let k = 0; k < v.length; k++) items.push(v[k]); return list(items); }
      if (typedProto.isPrototypeOf(v)) return list(Array.from(v));
      if (v instanceof SetC) {
        const items = [...apply(setValues, v, [])];
        if (items.every((x) => typeof x === 'number')) items.sort((a, b) => a - b);
        else if (items.every((x) => typeof x === 'string')) items.sort();
        return list(items);
      }
      if (v instanceof MapC) {
        const pairs = [...apply(mapEntries, v, [])];
        if (pairs.every(([k]) => typeof k === 'string' || typeof k === 'number')) {
          return '{' + pairs.map(([k, x]) => stringify(StrFn(k)) + ':' + toJSONText(x, depth + 1, seen)).join(',') + '}';
        }
        return list(pairs);
      }
      const proto = getProto(v);
      const instance = proto !== null && proto !== ObjProto;
      const fields = keys(v).filter((k) => !(instance && k[0] === '_'));
      return '{' + fields.map((k) => stringify(k) + ':' + toJSONText(v[k], depth + 1, seen)).join(',') + '}';
    } finally {
      seen.pop();
    }
  }

  function finish(value) {
    let text;
    try { text = toJSONText(value, 0, []); }
    catch (e) { return stringify({ status: 'error', error: 'the returned value cannot be turned into JSON: ' + describe(e).text }); }
    return stringify({ status: 'ok', value: text });
  }
  function failed(e) { const d = describe(e); return stringify({ status: 'error', error: d.text, stack: d.stack }); }

  const api = {
    // Loads the main module, finds the entrypoint and calls it: the record as JSON text,
    // or {"pending": true} when it returned a promise (settled later through \`settle\`).
    invoke(callJSON) {
      try {
        const [mainFile, namesJSON, wanted, inputJSON] = parse(callJSON);
        makeRequire(mainFile)(mainFile);
        const main = cache.get(mainFile);
        const { fn, self } = entry(main, parse(namesJSON), wanted);
        const input = parse(inputJSON);
        const result = apply(fn, self, argsFor(fn, input));
        if (result !== null && (typeof result === 'object' || typeof result === 'function') && typeof result.then === 'function') {
          result.then((v) => settle(finish(v)), (e) => settle(failed(e)));
          return '{"pending":true}';
        }
        return finish(result);
      } catch (e) {
        return failed(e);
      }
    },
    // Runs the callback of the timer that fired; an exception in it ends the case.
    fire() {
      const taken = takeTimer();
      const id = taken >> 1;
      const fn = timers[id];
      if (!fn) return;
      if (!(taken & 1)) delete timers[id];
      try { fn(); } catch (e) { settle(failed(e)); }
    },
  };
  defineProperty(g, '__berth__', { value: O.freeze(api), writable: false, configurable: false, enumerable: false });
})`, { filename: 'berth-harness' });

const INVOKE = new vm.Script('__berth__.invoke(__berth_call)', { filename: 'berth-harness' });
const FIRE = new vm.Script('__berth__.fire()', { filename: 'berth-harness' });
// Runs nothing; its only effect is draining the context's microtasks (continuations of
// promises that the host settled, which a context in afterEvaluate mode does not run
// by itself).
const PUMP = new vm.Script('undefined', { filename: 'berth-harness' });

// ---- errors: the line in the candidate's code ---------------------------------------------

function candidateLine(stack) {
  for (const frame of String(stack).split('\n').slice(1)) {
    const m = /\(?([^\s()]+):(\d+):(\d+)\)?\s*$/.exec(frame);
    if (!m || !compiled.has(m[1])) continue;
    let line = Number(m[2]);
    const column = Number(m[3]);
    const map = compiled.get(m[1]).map;
    if (map) {
      try {
        const found = map.findEntry(line - 1, column - 1);
        if (found && typeof found.originalLine === 'number') line = found.originalLine + 1;
      } catch (_) {}
    }
    const file = m[1];
    return file === mainFile ? ` (line ${line})` : ` (${path.relative(cwd, file)} line ${line})`;
  }
  return '';
}

// ---- leftovers --------------------------------------------------------------------------

function groupsOf(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const line = status.split('\n').find((l) => l.startsWith('Groups:'));
    return line ? line.split(/\s+/).slice(1).filter(Boolean) : [];
  } catch (_) {
    return [];
  }
}
const TAG = groupsOf('self').find((g) => Number(g) >= TAG_GID_BASE);

// Processes a case started (child_process) that still run: they carry this exec's tag.
function killLeftovers() {
  if (TAG === undefined) return;
  for (let round = 0; round < 100; round++) {
    let found = false;
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
      if (groupsOf(name).includes(TAG)) {
        found = true;
        try {
          process.kill(Number(name), 'SIGKILL');
        } catch (_) {}
      }
    }
    if (!found) return;
  }
}

// ---- one case -----------------------------------------------------------------------------

function runCase(c) {
  killLeftovers();
  const started = Date.now();
  const deadline = started + timeoutMs;
  let output = '';
  let over = false;
  let settled = null;
  let wake = null;
  const timers = new Map();
  const fired = [];
  let nextTimer = 1;
  const host = {
    write(text) {
      if (over) return;
      if (output.length < spec.max_stdout) output += String(text).slice(0, spec.max_stdout - output.length);
    },
    // Never throws into the context (a host error object would hand the candidate the
    // host's Function); failures come back as text.
    resolve(from, id) {
      try {
        if (id.startsWith('./') || id.startsWith('../') || id.startsWith('/')) {
          const found = candidateModule(from, id);
          if (!found) return { error: `Cannot find module '${id}'`, code: 'MODULE_NOT_FOUND' };
          if (found.json !== undefined) return { file: found.file, json: found.json };
          return { file: found.file, dir: path.dirname(found.file), wrapper: found.record.script.runInContext(ctx) };
        }
        if (Module.builtinModules.includes(id.replace(/^node:/, ''))) {
          return {
            error: `Node's built-in module '${id}' is not offered to code under test (run-tests gives it JavaScript's built-ins, console, timers and a stand-in process)`,
            code: 'MODULE_NOT_FOUND',
          };
        }
        const found = packageFile(from, id);
        if (!found) return { error: `Cannot find module '${id}'`, code: 'MODULE_NOT_FOUND' };
        if (found.json !== undefined) return { file: found.file, json: found.json };
        return { file: found.file, dir: path.dirname(found.file), wrapper: found.record.script.runInContext(ctx) };
      } catch (e) {
        if (e && e.compileError !== undefined) return { error: e.compileError, code: 'SYNTAX' };
        return { error: String((e && e.message) || e), code: (e && e.code) || 'ERROR' };
      }
    },
    settle(text) {
      if (settled === null) settled = text;
      if (wake) wake();
    },
    setTimer(ms, repeat) {
      const id = nextTimer++;
      const fire = () => {
        if (over) return;
        if (!repeat) timers.delete(id);
        // The id, and whether the timer repeats, as one number (only numbers cross).
        fired.push(id * 2 + (repeat ? 1 : 0));
        runInCase(FIRE);
      };
      timers.set(id, repeat ? setInterval(fire, ms) : setTimeout(fire, ms));
      return id;
    },
    clearTimer(id) {
      const t = timers.get(id);
      if (t) {
        clearTimeout(t);
        clearInterval(t);
        timers.delete(id);
      }
    },
    takeTimer() {
      return fired.shift();
    },
    cwd,
    now: () => performance.now(),
  };
  const ctx = vm.createContext(Object.create(null), { microtaskMode: 'afterEvaluate' });
  BOOT.runInContext(ctx)(host);
  function runInCase(script) {
    const left = deadline - Date.now();
    if (left <= 0) return host.settle('{"status":"timeout"}');
    try {
      return script.runInContext(ctx, { timeout: left });
    } catch (e) {
      if (e && e.code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') return host.settle('{"status":"timeout"}');
      return host.settle(JSON.stringify({ status: 'error', error: `${e && e.name}: ${e && e.message}` }));
    }
  }
  // Only text crosses into the context.
  ctx.__berth_call = JSON.stringify([
    mainFile,
    JSON.stringify(compiled.get(mainFile).names),
    spec.entrypoint || '',
    JSON.stringify(c.input === undefined ? null : c.input),
  ]);
  const first = runInCase(INVOKE);
  if (typeof first === 'string' && first !== '{"pending":true}') host.settle(first);
  const done = () => {
    over = true;
    for (const t of timers.values()) {
      clearTimeout(t);
      clearInterval(t);
    }
    killLeftovers();
    return record(c, settled || '{"status":"timeout"}', output, Date.now() - started);
  };
  if (settled !== null) return Promise.resolve(done());
  return new Promise((resolve) => {
    let finished = false;
    const end = () => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearInterval(pump);
      resolve(done());
    };
    const timer = setTimeout(end, Math.max(0, deadline - Date.now()));
    const pump = setInterval(() => runInCase(PUMP), 1);
    wake = end;
  });
}

function record(c, text, output, duration) {
  let r;
  try {
    r = JSON.parse(text);
  } catch (_) {
    r = { status: 'error', error: "the case's result was garbled" };
  }
  const head = { i: c.i, status: r.status, stdout: output, duration_ms: duration };
  if (r.status === 'timeout') head.error = `the case ran past its ${spec.timeout_s}s`;
  if (r.status === 'error') head.error = String(r.error).slice(0, 2000) + candidateLine(r.stack || '');
  let line = JSON.stringify(head);
  if (r.status === 'ok') {
    const value = ascii(String(r.value));
    let valid = value.length <= MAX_VALUE && !/[\r\n]/.test(value);
    if (valid) {
      try {
        JSON.parse(value);
      } catch (_) {
        valid = false;
      }
    }
    if (!valid) {
      head.status = 'error';
      head.error =
        value.length > MAX_VALUE
          ? `the returned value is larger than ${MAX_VALUE} bytes as JSON`
          : 'the returned value cannot be turned into JSON';
      line = JSON.stringify(head);
    } else {
      // The value's own JSON text, exact (big integers keep every digit).
      line = line.slice(0, -1) + ',"value":' + value + '}';
    }
  }
  return line;
}

// A rejection nobody handled inside a case is that case's business, not the harness's end.
process.on('unhandledRejection', () => {});

async function main() {
  try {
    load();
  } catch (e) {
    if (e && e.compileError !== undefined) return emit({ compile_error: e.compileError });
    throw e;
  }
  if (typescript && !spec.modules) return emit({ compiled: true, modules });
  emit({ ready: true, modules });
  for (const c of spec.cases) {
    writeAll(ascii(await runCase(c)) + '\n');
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`berth harness: ${e && e.stack}\n`);
    process.exit(70);
  },
);
