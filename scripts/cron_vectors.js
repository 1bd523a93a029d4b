#!/usr/bin/env node
/*
 * Writes tests/data/cron_vectors.json: run times computed by cron-parser 5.x (the parser of the
 * original, BullMQ-based service), which tests/test_cron_vectors.py compares with
 * scheduler_api.cron. The test reads the file; only regenerating it needs Node.
 *
 * Regenerate (Node 20; cron-parser is installed in a temporary directory, never committed):
 *
 *   tmp=$(mktemp -d) && npm install --prefix "$tmp" cron-parser@5 \
 *     && NODE_PATH="$tmp/node_modules" node scripts/cron_vectors.js tests/data/cron_vectors.json
 *
 * Cases: the expressions of cron-parser's own test suite (tests/*.test.ts of
 * harrisiirak/cron-parser, listed below as data) and expressions generated with a seeded PRNG
 * (lists, ranges, single-value ranges N-N in every field, steps, names, L, #, ?, macros, Sunday as 0
 * and 7, five and six fields), each in UTC and in Asia/Tokyo (no DST since 1951), from two start
 * instants, with the next five runs (ISO UTC) or the error cron-parser raised.
 */
'use strict';

const fs = require('fs');
const { CronExpressionParser } = require('cron-parser');
const VERSION = require('cron-parser/package.json').version;

// Expressions quoted in cron-parser's test suite (tests/*.test.ts at 5.10), tabs kept.
const SUITE = [
  '*\t*\t*\t*\t*', '* * * * *', '* * * * * *', '* * * * * 0', '* * * * * 0#1', '* * * * * 9', '* * * * * H',
  '* * * * * H#1', '* * * * */10,12-13 *', '* * * * */2', '* * * * 0,2,4', '* * * * 0,2,4,6', '* * * * 0-6',
  '* * * * 1,3,5', '* * * * 2 *', '* * * * 8 *', '* * * * 8 0', '* * * * H *', '* * * * H H',
  '* * * 10-15,40 * *', '* * * 12 * *', '* * * 12 8 *', '* * * 4 *', '* * * 4-6 *', '* * * H * *', '* * * H H *',
  '* * 1,4-10,L * *', '* * 1-25 4 *', '* * 1-6 ? * *', '* * 12-36 * * *', '* * 15 * * *', '* * 15 12 * *',
  '* * 31 * *', '* * 9-18/3 16-26/5 6 *', '* * 9-20/3 16-26/5 jun *', '* * H * * *', '* * H H * *',
  '* 0,30 9-17/2 1,15 */2 1-5', '* 32,72 * * * *', '* 34 * * * *', '* 34 10-19/3 * * 1-5', '* 34 15 * * *',
  '* H * * * *', '* H H * * *', '* H H(9-20)/3 * * 1-5', '*/1 * * * * *', '*/10 * * * * ,', '*/10 * * * * ,2',
  '*/10 2-2 * * *', '*/20 * * * *', '*/20 * * * * *', '*/20 3 * * *', '*/25 * * * *', '*/3 * * * *',
  '*/5 * * * *', '*/5 * * * * *', '*/5 */2 */1 * *', '*/5 */2 1-31 * *', '- * * * * *', '-1 * * * * *',
  '0 * * * *', '0 * * * * *', '0 * * * * */2', '0 * * * * 0-4/2', '0 * * * * 1,3,5', '0 * * * 7',
  '0 * * 1,4-10,L * *', '0 * * 15 * *', '0 * 20 15 * *', '0 * 27 * *', '0 * 30 * *', '0 */-5 * * *',
  '0 */0 * * *', '0 */5 */2 1-31 * *', '0 0 * * 0,0', '0 0 * * 0,0,0', '0 0 * * 0,7', '0 0 * * 0/2',
  '0 0 * * 1/2', '0 0 * * 2-7/2', '0 0 * * 2/2', '0 0 * * 4/2', '0 0 * * 5', '0 0 * * 6/1', '0 0 * * 7,0',
  '0 0 * 2 *', '0 0 * 6 2', '0 0 * H/60 *', '0 0 0 * * 0L', '0 0 0 * * 1#3', '0 0 0 * * 1,5L', '0 0 0 * * 1,L',
  '0 0 0 * * 1L', '0 0 0 * * 1L,5L', '0 0 0 * * 2L', '0 0 0 * * 3L', '0 0 0 * * 4,6L', '0 0 0 * * 4L',
  '0 0 0 * * 5L', '0 0 0 * * 6L', '0 0 0 * * 7L', '0 0 0 * * L', '0 0 0 * H/60 *', '0 0 0 1 1 0',
  '0 0 0 1,2 * *', '0 0 0 16,18 * 3#3', '0 0 0 2-30/2 * *', '0 0 0 2-4,7-31 * *', '0 0 0 31 4,6 *',
  '0 0 0 8 * 5#3', '0 0 0 ? * 0##4', '0 0 0 ? * 0#1', '0 0 0 ? * 0#2', '0 0 0 ? * 0#3', '0 0 0 ? * 0#4',
  '0 0 0 ? * 0#5', '0 0 0 ? * 0,6#4', '0 0 0 ? * 1#', '0 0 0 ? * 1#0', '0 0 0 ? * 1/2#3', '0 0 0 ? * 2-4#2',
  '0 0 0 ? * 4#6', '0 0 0 ? MAY 0#2', '0 0 0 H(0-5) * *', '0 0 0 H(0-5)/50 * *', '0 0 0 H/2 * *',
  '0 0 1,3,6-8,L 2 *', '0 0 1-31 * 5', '0 0 12 1-31 * 1', '0 0 12 ? MAY 0#2', '0 0 12 L 1 5L', '0 0 16 * *',
  '0 0 16 * */1', '0 0 16 * 0-6', '0 0 16 * 0-7', '0 0 16 * ?', '0 0 16,31 6 *', '0 0 16/5 6 *',
  '0 0 2-30/2 * *', '0 0 2/2 * *', '0 0 29 2 *', '0 0 31 1,6 *', '0 0 31 2 1-5', '0 0 31 4 *', '0 0 5,10 * * *',
  '0 0 9 * * *', '0 0 H(0-0)/40 * *', '0 0 H(0-5) * *', '0 0 H/40 * *', '0 0 L * *', '0 0 L 10 *',
  '0 0 L 2 *', '0 0,0 * * *', '0 1 1 1 * 1', '0 1 2 3 * 1-3,5', '0 1,2,4-10,20-35/5,57 * * * *',
  '0 1,9,11 * * *', '0 10 * * * *', '0 10,20 * * * *', '0 12 * * *', '0 12 * * 3', '0 12 */5 6 *',
  '0 12 1-31 * 1', '0 12,13,10,1-3 * * *', '0 15 */5 5 *', '0 16 * * * *', '0 2,3 * * *', '0 20 15 * * *',
  '0 22,23 * * *', '0 23,0 * * *', '0 3 * * *', '0 3 * * 7', '0 3,6,9,12,15,18,21 * * *', '0 3-21/3 * * *',
  '0 4 * * 7', '0 4,5 * * *', '0 5 * * 7', '0 5,15,25 * * * *', '0 5-55/5 * * * *', '0 5/5/5 * * *',
  '0 6-18/6 * * *', '0 8 * * 0', '0 9 1 1 *', '0 9,11,1 * * *', '0 9,12,15,18 * * 1-5',
  '0 H(0-29)/10 * * * *', '0 H(1-5)/10 * * * *', '0,0 * * * *', '0,0 0 0 1 1 0', '0,0,0 * * * *',
  '0,30 * * * *', '0,30 9-17/2 1,15 */2 1-5', '0-5 * * * *', '0/30 * * * * ?', '1 1 1 1 1', '1,2,4-10,20-35/5,57 * * * *',
  '1-5 1 1 1 1 1', '1/2 * * * * ?', '10 ) 12 8 0', '10 */A 12 8 0', '10 0,1,z 12 8 0', '10 0-z 12 8 0',
  '10 2 12 8 0', '10 2 12 8 6,0', '10 2 12 8 6-7', '10 2 12 8 7', '10 2 3,6 * ?', '10 2 ? * 3', '10 x 12 8 0',
  '10,20 * * * * *', '10-30 2 12 8 0', '10-30/2 2 12 8 0', '15 10 * * MON-TUE', '15 10 * * MON-TUR',
  '15 10 * * SUN', '15 10 * jAn-FeB mOn-tUE', '20 15 * *', '20 15 * * *', '20-40/10 * * * * *', '30 1 * * *',
  '30 1,2 * * *', '30 16 * * 0,6', '30 16 * * 6,0', '30 16 * * 6,7', '30 16 * * 7,6', '30 2 * * *', '30 2 * * 7',
  '30 22 * * *', '30 59 2 * * *', '30-20 * * * * *', '5 * * * * *', '5 34 * * * *', '5 34 15 12 8 0',
  '5-55/5 * * * *', '5/5 * * * *', '59 59 23 * * *', '6,9 * * * * *', '6/23 * * * *', '61 * * * * *',
  '? ? * * ?', '@yearly', 'H * * * * *', 'H H * * * *', 'H H H H H H', 'H(0-29)/10 * * * *',
  'H(1-10)/0 * * * *', 'H(1-5)/10 * * * *', 'H(1-5)/10 * * * * *', 'H(10-20) * * * *', 'H(10-5) * * * *',
  'H(10-5)/2 * * * *', 'H(5-10)/3 * * * * *', 'H(50-100)/60 * * * *', 'H/0 * * * *', 'H/5 * * * * *',
];

// Deterministic PRNG (mulberry32), so the file only changes when cron-parser does.
function mulberry32(seed) {
  return function () {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(20260501);
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (xs) => xs[Math.floor(rand() * xs.length)];

const MONTHS = ['JAN', 'FEB', 'MAR', 'APR', 'MAY', 'JUN', 'JUL', 'AUG', 'SEP', 'OCT', 'NOV', 'DEC'];
const DAYS = ['SUN', 'MON', 'TUE', 'WED', 'THU', 'FRI', 'SAT'];
// [low, high] as cron-parser reads each field (day of week to 7 = Sunday).
const SPAN = { second: [0, 59], minute: [0, 59], hour: [0, 23], dom: [1, 31], month: [1, 12], dow: [0, 7] };

function name(field, v, p) {
  if (field === 'month' && rand() < p) return MONTHS[v - 1];
  if (field === 'dow' && v < 7 && rand() < p) return DAYS[v];
  return String(v);
}

function item(field) {
  const [lo, hi] = SPAN[field];
  const r = rand();
  if (r < 0.25) return name(field, int(lo, hi), 0.4);
  if (r < 0.45) {
    const a = int(lo, hi);
    const b = rand() < 0.15 ? a : int(a, hi); // N-N now and then
    return `${name(field, a, 0.4)}-${name(field, b, 0.4)}`;
  }
  if (r < 0.6) return `*/${int(1, Math.min(hi - lo + 1, 15))}`;
  if (r < 0.72) return `${name(field, int(lo, hi), 0.3)}/${int(1, Math.min(hi - lo, 12) || 1)}`;
  if (r < 0.85) {
    const a = int(lo, hi);
    const b = int(a, hi);
    return `${a}-${b}/${int(1, Math.max(1, b - a))}`;
  }
  return String(int(lo, hi));
}

function field(f) {
  const r = rand();
  if (r < 0.3) return '*';
  if (r < 0.36) return '?';
  if (f === 'dom' && r < 0.44) return rand() < 0.5 ? 'L' : `${int(1, 28)},L`;
  if (f === 'dow' && r < 0.44) {
    const d = int(0, 7);
    return rand() < 0.5 ? `${d < 7 && rand() < 0.5 ? DAYS[d] : d}L` : `${rand() < 0.4 && d < 7 ? DAYS[d] : d}#${int(1, 5)}`;
  }
  const n = rand() < 0.6 ? 1 : int(2, 3);
  const items = [];
  for (let i = 0; i < n; i++) items.push(item(f));
  return items.join(',');
}

function generated(count) {
  const out = new Set();
  // Single-value ranges in every field, with names and with steps.
  for (const e of [
    '0 9-9 * * *', '0 0 5-5 * *', '0 0 * * MON-MON', '6-6 * * * * *', '7-7 0 * * *', '0 0 1 JUN-JUN *',
    '0 0 1 6-6 *', '0 0 * * 0-0', '0 0 * * 7-7', '0 0 * * SUN-SUN', '0 3-3/2 * * *', '5-5/10 * * * *',
    '0 0 10-10/3 * *', '0 0 * * 3-3/2', '0 0 * MAR-MAR/2 *', '15-15 15-15 15-15 * * *', '0 0 31-31 * *',
    '0 0 * * 1/2', '0 0 * * 6/1', '0 0 * * 5-7', '0 0 * * 0/3', '0 0 * * 5/1', '0 0 * * 3-7/2',
    '0 0 * * FRI-SAT,SUN', '0 0 * * 5L', '0 0 * * FRIL', '0 0 1,15 * 5L', '0 0 0 8 * 5#3', '0 0 L * 1',
    '0 0 13 * FRI', '0 12 ? * 1-5', '? * * * *', '0 ? * * *', '0 0 * ? *', '@minutely', '@secondly', '@weekdays',
    '@weekends', '@yearly', '@annually', '@monthly', '@weekly', '@daily', '@hourly', '@midnight',
    '0 20/2,23 * * *', '0 1,20/2 * * *', '0 0 * * FRI-MON', '0 0 * * 5-1', '*/61 * * * *', '0 0 30 2 *',
  ]) out.add(e);
  while (out.size < count) {
    const six = rand() < 0.35;
    const fields = [];
    if (six) fields.push(rand() < 0.5 ? String(int(0, 59)) : field('second'));
    fields.push(rand() < 0.4 ? String(int(0, 59)) : field('minute'));
    fields.push(rand() < 0.4 ? String(int(0, 23)) : field('hour'));
    fields.push(field('dom'));
    fields.push(rand() < 0.6 ? '*' : field('month'));
    fields.push(field('dow'));
    out.add(fields.join(' '));
  }
  return [...out];
}

function runs(expr, tz, start) {
  let it;
  try {
    it = CronExpressionParser.parse(expr, { currentDate: new Date(start), tz });
  } catch (e) {
    return { error: String(e.message) };
  }
  const out = [];
  for (let i = 0; i < 5; i++) {
    try {
      out.push(it.next().toDate().toISOString().replace('.000Z', 'Z'));
    } catch (e) {
      return { runs: out, error: String(e.message) };
    }
  }
  return { runs: out };
}

function main() {
  const target = process.argv[2] || 'tests/data/cron_vectors.json';
  const fixed = '2026-01-05T08:59:59Z';
  const cases = [];
  const add = (source, expr) => {
    for (const tz of ['UTC', 'Asia/Tokyo']) {
      const year = int(2019, 2031);
      const start = new Date(Date.UTC(year, int(0, 11), int(1, 28), int(0, 23), int(0, 59), int(0, 59)));
      if (rand() < 0.2) start.setUTCMilliseconds(int(1, 999));
      for (const s of [fixed, start.toISOString().replace('.000Z', 'Z')]) {
        cases.push({ source, expr, tz, start: s, ...runs(expr, tz, s) });
      }
    }
  };
  for (const e of SUITE) add('cron-parser test suite', e);
  for (const e of generated(600)) add('generated', e);
  const doc = {
    about: 'Run times by cron-parser; written by scripts/cron_vectors.js, read by tests/test_cron_vectors.py',
    cron_parser: VERSION,
    node: process.version,
    cases,
  };
  fs.writeFileSync(target, JSON.stringify(doc, null, 0).replace(/\},\{/g, '},\n{') + '\n');
  console.log(`${cases.length} cases (${cases.filter((c) => c.runs && c.runs.length === 5).length} with five runs) -> ${target}`);
}

main();
