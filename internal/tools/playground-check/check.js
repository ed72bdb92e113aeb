// Browser check of the offline playground: loads /playground in headless Chromium, runs
// `{ viewer { kind role tenant { slug } } }` with the given token through the GraphiQL UI,
// prints the answer and any request that left 127.0.0.1 (there must be none).
//
//   cd internal/tools/playground-check && PUPPETEER_SKIP_DOWNLOAD=1 npm install
//   node check.js http://127.0.0.1:8080/playground opu_...
//
// Needs Debian's chromium at /usr/bin/chromium (apt-get install chromium).
const puppeteer = require('puppeteer-core');
(async () => {
  const [url, token] = process.argv.slice(2);
  const browser = await puppeteer.launch({executablePath: '/usr/bin/chromium', headless: 'new',
    args: ['--no-sandbox','--disable-gpu','--disable-quic','--no-first-run','--disable-background-networking','--disable-component-update','--disable-sync']});
  const page = await browser.newPage();
  const external = [];
  page.on('request', r => { const u = new URL(r.url()); if (!['127.0.0.1','localhost'].includes(u.hostname) && u.protocol.startsWith('http')) external.push(r.url()); });
  await page.goto(url, {waitUntil: 'networkidle0'});
  await page.waitForSelector('.graphiql-execute-button');
  const setup = await page.evaluate((token) => {
    const cms = Array.from(document.querySelectorAll('.CodeMirror')).map(e => e.CodeMirror);
    cms[0].setValue('{ viewer { kind role tenant { slug } } }');
    const hdr = cms.find((cm, i) => i > 0 && cm.getValue().includes('Authorization'));
    if (!hdr) return 'no headers editor: ' + cms.map(c => c.getValue().slice(0, 60)).join(' | ');
    hdr.setValue(JSON.stringify({Authorization: 'Bearer ' + token}));
    return 'headers set';
  }, token);
  console.log(setup);
  await page.click('.graphiql-execute-button');
  await new Promise(r => setTimeout(r, 2000));
  const result = await page.evaluate(() => Array.from(document.querySelectorAll('.CodeMirror')).map(e => e.CodeMirror.getValue()).join('\n=====\n'));
  console.log(result);
  await page.screenshot({path: 'playground.png'});
  console.log('external requests:', external.length ? external : 'none');
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
