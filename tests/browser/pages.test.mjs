// Real-browser end-to-end tests of the hosted sign-up pages (see scripts/browser-tests.sh, which
// starts the all-in-one runner and sets BASE_URL, MAIL_DIR and SCREENSHOT_DIR).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const BASE = process.env.BASE_URL;
const MAIL_DIR = process.env.MAIL_DIR;
const SHOTS = process.env.SCREENSHOT_DIR;
const SMS_DIR = process.env.SMS_DIR;
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const PASSWORD = 'correct horse battery staple';

let browser;
let counter = 0;

before(async () => {
  assert.ok(BASE && MAIL_DIR && SMS_DIR && SHOTS, 'BASE_URL, MAIL_DIR, SMS_DIR and SCREENSHOT_DIR must be set');
  await fs.mkdir(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => { await browser?.close(); });

/** A fresh address for one test. */
function address(label) {
  counter += 1;
  return `${label}-${process.pid}-${Date.now()}-${counter}@example.com`;
}

/** A page in a fresh context that fails the test on a console error (a CSP violation too). */
async function newPage(t, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 }, ...options });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors = [];
  // Error pages answer 4xx on purpose (the tests check them); anything else, a CSP violation
  // included, is a failure.
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource: the server responded')) {
      errors.push(message.text());
    }
  });
  page.on('pageerror', (error) => errors.push(String(error)));
  t.after(() => assert.deepEqual(errors, [], 'no console errors'));
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

function decodeQuotedPrintable(text) {
  return text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
}

/** The mails to `to`, oldest first, once there are at least `count` (bounded wait). */
async function mailsTo(to, count) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let files = [];
    try { files = await fs.readdir(MAIL_DIR); } catch { /* not created yet */ }
    const mails = [];
    for (const file of files.filter((name) => name.endsWith('.eml'))) {
      const full = path.join(MAIL_DIR, file);
      const [raw, stat] = await Promise.all([fs.readFile(full, 'utf8'), fs.stat(full)]);
      if (!raw.includes(to)) continue;
      // The mails are 7bit today; decode in case a part ever comes quoted-printable.
      const text = /Content-Transfer-Encoding: quoted-printable/i.test(raw) ? decodeQuotedPrintable(raw) : raw;
      mails.push({ text, at: stat.mtimeMs });
    }
    if (mails.length >= count) return mails.sort((a, b) => a.at - b.at).map((mail) => mail.text);
    if (Date.now() > deadline) throw new Error(`${mails.length} of ${count} mails to ${to} after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The code of the first SMS to `phone` in SMS_DIR (bounded wait). */
async function smsCodeTo(phone) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    let files = [];
    try { files = await fs.readdir(SMS_DIR); } catch { /* not created yet */ }
    // Finished SMS only: the gateway writes `.<id>.txt.tmp` first and renames it.
    for (const file of files.filter((name) => name.endsWith('.txt'))) {
      const text = await fs.readFile(path.join(SMS_DIR, file), 'utf8');
      const code = text.includes(`To: ${phone}`) && text.match(/code is (\d+)/);
      if (code) return code[1];
    }
    if (Date.now() > deadline) throw new Error(`no SMS to ${phone} after 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function linkIn(mail) {
  const found = mail.match(/https?:\/\/[^\s"<>]+\/user\/verify\?token=[0-9a-f]{64}/);
  assert.ok(found, `a link in ${mail}`);
  return found[0];
}

function codeIn(mail) {
  const found = mail.match(/code: (\d{6})/);
  assert.ok(found, `a code in ${mail}`);
  return found[1];
}

async function signUp(page, email, { firstName = 'Ann', lastName = 'Lee', password = PASSWORD, phone = '' } = {}) {
  await page.goto(`${BASE}/signup`);
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByLabel('First name').fill(firstName);
  await page.getByLabel('Last name').fill(lastName);
  await page.getByLabel('Phone number').fill(phone);
  await page.getByRole('button', { name: 'Create account' }).click();
}

async function heading(page) {
  return (await page.getByRole('heading', { level: 1 }).textContent()).trim();
}

test('sign up with the form, open the mailed link, press the button: verified, then the welcome mail', async (t) => {
  const page = await newPage(t);
  const email = address('link');
  await page.goto(`${BASE}/signup`);
  // The stylesheet applies under the strict CSP.
  const background = await page.getByRole('button', { name: 'Create account' })
    .evaluate((button) => getComputedStyle(button).backgroundColor);
  assert.equal(background, 'rgb(29, 78, 216)');
  await shot(page, 'signup');
  await signUp(page, email);
  await page.waitForURL(/\/signup\/check\?email=/);
  assert.equal(await heading(page), 'Check your inbox');
  assert.match(await page.textContent('main'), new RegExp(email.replace(/[.+]/g, '\\$&')));
  await shot(page, 'check-inbox');

  const [mail] = await mailsTo(email, 1);
  await page.goto(linkIn(mail));
  assert.equal(await heading(page), 'Confirm your email address');
  await shot(page, 'confirm-link');
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForLoadState();
  assert.equal(await heading(page), 'Email address verified');
  await shot(page, 'verified');

  const mails = await mailsTo(email, 2);
  assert.ok(mails.some((text) => text.includes('Subject: Welcome!')), 'the welcome mail');

  // The link again: already verified.
  await page.goto(linkIn(mail));
  assert.equal(await heading(page), 'Already verified');
});

test('the code path: type the code from the mail on the check page', async (t) => {
  const page = await newPage(t);
  const email = address('code');
  await signUp(page, email);
  await page.waitForURL(/\/signup\/check/);
  const [mail] = await mailsTo(email, 1);
  await page.getByLabel('Code from the mail').fill(codeIn(mail));
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForURL(`${BASE}/signup/verified`);
  assert.equal(await heading(page), 'Email address verified');
  await mailsTo(email, 2);
});

test('with a phone number: the SMS code on the check page, then the mail code', async (t) => {
  const page = await newPage(t);
  const email = address('phone');
  const phone = '+447400123456';
  await signUp(page, email, { phone });
  await page.waitForURL(/\/signup\/check\?.*phone=/);
  await page.getByLabel('Code from the SMS').fill(await smsCodeTo(phone));
  await shot(page, 'check-inbox-phone');
  await page.getByRole('button', { name: 'Confirm my phone number' }).click();
  await page.waitForURL(/phone_verified=1/);
  assert.match(await page.getByRole('status').textContent(), /phone number is verified/);
  const [mail] = await mailsTo(email, 1);
  await page.getByLabel('Code from the mail').fill(codeIn(mail));
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForURL(`${BASE}/signup/verified`);
});

test('resend: a new mail whose code works', async (t) => {
  const page = await newPage(t);
  const email = address('resend');
  await signUp(page, email);
  await page.waitForURL(/\/signup\/check/);
  await mailsTo(email, 1);
  await page.getByRole('button', { name: 'Send a new mail' }).click();
  await page.waitForURL(/resent=1/);
  assert.match(await page.getByRole('status').textContent(), /a new mail is on its way/);
  await shot(page, 'resent');
  const mails = await mailsTo(email, 2);
  const newest = mails.find((text) => text.includes('Subject: Your new confirmation link'));
  assert.ok(newest, 'the resent mail');
  await page.getByLabel('Code from the mail').fill(codeIn(newest));
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForURL(`${BASE}/signup/verified`);
});

test('error states: duplicate address, weak password, wrong code, invalid link', async (t) => {
  const page = await newPage(t);
  const email = address('errors');

  await signUp(page, email, { password: 'short1', firstName: 'Zoë', lastName: "O'Hara" });
  assert.match(await page.locator('#password-error').textContent(), /between 8 and 128 characters/);
  assert.equal(await page.getByLabel('Email address').inputValue(), email);
  assert.equal(await page.getByLabel('First name').inputValue(), 'Zoë');
  assert.equal(await page.getByLabel('Last name').inputValue(), "O'Hara");
  assert.equal(await page.getByLabel('Password').inputValue(), '', 'the password is never sent back');
  assert.equal(await page.getByLabel('Password').getAttribute('aria-invalid'), 'true');
  assert.match(await page.getByRole('alert').textContent(), /correct the fields/);
  await shot(page, 'signup-weak-password');

  await signUp(page, email);
  await page.waitForURL(/\/signup\/check/);
  await signUp(page, email, { firstName: 'Other' });
  assert.match(await page.locator('#email-error').textContent(), /already exists/);
  assert.equal(await page.getByLabel('First name').inputValue(), 'Other');
  await shot(page, 'signup-email-taken');

  await page.goto(`${BASE}/signup/check?email=${encodeURIComponent(email)}`);
  const [mail] = await mailsTo(email, 1);
  const wrong = codeIn(mail) === '000000' ? '111111' : '000000';
  await page.getByLabel('Code from the mail').fill(wrong);
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForLoadState();
  assert.match(await page.locator('#code-error').textContent(), /not correct or no longer valid/);
  await shot(page, 'wrong-code');

  await page.goto(`${BASE}/user/verify?token=${'0'.repeat(64)}`);
  assert.equal(await heading(page), 'This link is not valid');
  await shot(page, 'invalid-link');
});

test('keyboard only: Tab, type and Enter from the sign-up form to verified', async (t) => {
  const page = await newPage(t);
  const email = address('keyboard');
  await page.goto(`${BASE}/signup`);
  const focused = () => page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim());
  const order = [];
  for (const [value] of [[null], [email], [PASSWORD], ['Kim'], ['Park'], ['']]) {
    await page.keyboard.press('Tab');
    order.push(await focused());
    if (value) await page.keyboard.type(value);
  }
  assert.deepEqual(order, ['signup-outbox', 'email', 'password', 'first_name', 'last_name', 'phone']);
  await page.keyboard.press('Tab');
  assert.equal(await focused(), 'Create account');
  await page.keyboard.press('Enter');
  await page.waitForURL(/\/signup\/check/);

  const [mail] = await mailsTo(email, 1);
  const tabs = [];
  for (let i = 0; i < 3; i += 1) {
    await page.keyboard.press('Tab');
    tabs.push(await focused());
  }
  assert.deepEqual(tabs, ['signup-outbox', 'email', 'code']);
  await page.keyboard.type(codeIn(mail));
  await page.keyboard.press('Enter');
  await page.waitForURL(`${BASE}/signup/verified`);
  assert.equal(await heading(page), 'Email address verified');
});

test('a 375 px wide phone screen: no horizontal scrolling', async (t) => {
  const page = await newPage(t, { viewport: { width: 375, height: 740 }, isMobile: true });
  for (const [url, name] of [[`${BASE}/signup`, 'signup-mobile'], [`${BASE}/signup/check?email=ann%40example.com`, 'check-inbox-mobile']]) {
    await page.goto(url);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= 375, `${url} is ${width} px wide`);
    await shot(page, name);
  }
});

test('axe-core: no serious or critical violation on any page', async (t) => {
  // The strict CSP forbids the injected (inline) axe script: bypassed for this context only.
  const page = await newPage(t, { bypassCSP: true });
  const email = address('axe');
  await signUp(page, email, { password: 'short1' });
  const pages = [['signup with errors', null]];
  const audit = async (name) => {
    await page.addScriptTag({ path: AXE });
    const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ['violations'] }));
    const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${name}: ${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    assert.deepEqual(bad, [], bad.join('\n'));
  };
  await audit(pages[0][0]);
  await signUp(page, email);
  await page.waitForURL(/\/signup\/check/);
  await audit('check inbox');
  const [mail] = await mailsTo(email, 1);
  for (const [name, url] of [
    ['signup', `${BASE}/signup`],
    ['confirm link', linkIn(mail)],
    ['invalid link', `${BASE}/user/verify?token=nope`],
    ['check without address', `${BASE}/signup/check`],
    ['resent', `${BASE}/signup/check?email=${encodeURIComponent(email)}&resent=1`],
    ['check with a phone', `${BASE}/signup/check?email=${encodeURIComponent(email)}&phone=%2B447400123499&sms_resent=1`],
    ['verified', `${BASE}/signup/verified`],
    ['already verified', `${BASE}/signup/already-verified`],
  ]) {
    await page.goto(url);
    await audit(name);
  }
  await page.goto(`${BASE}/signup/check?email=${encodeURIComponent(email)}`);
  await page.getByLabel('Code from the mail').fill('12');
  await page.getByRole('button', { name: 'Confirm my email address' }).click();
  await page.waitForLoadState();
  await audit('wrong code');
});
