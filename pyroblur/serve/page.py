"""The web page the service serves at ``/``: drop an image or a short video, see before and
after side by side (boxes on the "before" can be toggled), the audit summary, a download
button; a video shows a progress bar from its job's status. Plain HTML and JavaScript, no
build step, no external resource (it works offline)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PyroBlur</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
 h1{margin:0 0 .5rem;font-size:1.4rem}
 #drop{border:2px dashed #888;border-radius:8px;padding:1.5rem;text-align:center;background:#fff;cursor:pointer}
 #drop.over{background:#eef}
 .row{display:flex;gap:1rem;flex-wrap:wrap;margin-top:1rem}
 .pane{flex:1 1 420px;background:#fff;border:1px solid #ddd;border-radius:8px;padding:.5rem}
 .pane h2{font-size:1rem;margin:.2rem 0 .5rem}
 .stage{position:relative;display:inline-block;max-width:100%}
 .stage img,.stage video{max-width:100%;display:block}
 .stage canvas{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
 progress{width:100%;height:1.2rem}
 #error{color:#b00020;font-weight:600;white-space:pre-wrap}
 table{border-collapse:collapse}td{padding:.1rem .6rem;border-bottom:1px solid #eee}
 .controls{margin-top:.6rem;display:flex;gap:1rem;flex-wrap:wrap;align-items:center}
 a.button{display:inline-block;padding:.4rem .8rem;background:#2356c5;color:#fff;border-radius:5px;text-decoration:none}
</style></head>
<body>
<h1>PyroBlur: hide faces and license plates</h1>
<div id="drop" tabindex="0">Drop an image or a short video here, or click to choose one
 <input id="file" type="file" accept="image/*,video/*" hidden></div>
<div class="controls">
 <label>Mask <select id="mode"><option>blur</option><option>mosaic</option><option>solid</option></select></label>
 <label><input type="checkbox" id="boxes" checked> boxes on "before"</label>
 <label>API key <input id="key" type="password" size="18" placeholder="only when required"></label>
 <span id="status" role="status"></span>
</div>
<progress id="progress" max="1" value="0" hidden></progress>
<div id="error" role="alert"></div>
<div class="row">
 <div class="pane"><h2>Before</h2><div class="stage" id="before"></div></div>
 <div class="pane"><h2>After</h2><div class="stage" id="after"></div>
  <div class="controls"><a id="download" class="button" hidden>Download</a></div></div>
</div>
<div class="pane" style="margin-top:1rem"><h2>Audit</h2><table id="audit"></table></div>
<script>
const $ = id => document.getElementById(id);
const keyInput = $('key');
keyInput.value = localStorage.getItem('pyroblur-key') || '';
keyInput.onchange = () => localStorage.setItem('pyroblur-key', keyInput.value);
function headers(){ return keyInput.value ? {'X-API-Key': keyInput.value} : {}; }
function status(t){ $('status').textContent = t; }
function fail(t){ $('error').textContent = t; status('failed'); }
function audit(rows){ $('audit').innerHTML = rows.map(([k,v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join(''); }
async function errorText(r){ try { const j = await r.json(); return `${r.status} ${j.error.code}: ${j.error.message}`; }
  catch(e){ return `HTTP ${r.status}`; } }
let dets = [];
function drawBoxes(){
  const img = $('before').querySelector('img'); const c = $('before').querySelector('canvas');
  if(!img || !c) return;
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.clearRect(0,0,c.width,c.height);
  if(!$('boxes').checked) return;
  g.lineWidth = Math.max(2, c.width/300);
  for(const d of dets){ g.strokeStyle = d.class === 'face' ? '#ff2d55' : '#00c853';
    g.strokeRect(d.x1, d.y1, d.x2-d.x1, d.y2-d.y1); }
}
$('boxes').onchange = drawBoxes;
const drop = $('drop');
drop.onclick = () => $('file').click();
drop.ondragover = e => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = e => { e.preventDefault(); drop.classList.remove('over'); if(e.dataTransfer.files[0]) go(e.dataTransfer.files[0]); };
$('file').onchange = () => { if($('file').files[0]) go($('file').files[0]); };
async function go(file){
  $('error').textContent = ''; $('after').innerHTML = ''; $('download').hidden = true; audit([]); dets = [];
  const url = URL.createObjectURL(file);
  const isVideo = file.type.startsWith('video/');
  $('before').innerHTML = isVideo ? `<video src="${url}" controls muted></video>` : `<img alt="before" src="${url}"><canvas></canvas>`;
  const body = new FormData(); body.append('file', file, file.name);
  const q = `mode=${$('mode').value}`;
  if(!isVideo){
    status('anonymizing...');
    const r = await fetch(`/v1/images?format=json&${q}`, {method:'POST', body, headers: headers()});
    if(!r.ok) return fail(await errorText(r));
    const j = await r.json();
    dets = j.detections || [];
    const data = `data:${j.media_type};base64,${j.image_base64}`;
    $('after').innerHTML = `<img id="after-img" alt="after" src="${data}">`;
    const a = $('download'); a.href = data; a.download = j.filename; a.hidden = false;
    const img = $('before').querySelector('img'); if(img.complete) drawBoxes(); else img.onload = drawBoxes;
    const gates = j.audit && j.audit.model.registry ? (j.audit.model.registry.gates_passed ? 'passed' : 'not passed') : '-';
    audit([['boxes hidden', j.boxes], ['faces', dets.filter(d=>d.class==='face').length],
           ['plates', dets.filter(d=>d.class==='license_plate').length], ['model', j.model_version],
           ['promotion gates', gates], ['input sha256', j.audit ? j.audit.input.sha256.slice(0,16)+'...' : '-'],
           ['output sha256', j.audit ? j.audit.output.sha256.slice(0,16)+'...' : '-']]);
    status('done');
    return;
  }
  status('uploading...');
  const r = await fetch(`/v1/jobs?${q}`, {method:'POST', body, headers: headers()});
  if(!r.ok) return fail(await errorText(r));
  let job = await r.json();
  const bar = $('progress'); bar.hidden = false; bar.value = 0;
  while(!['completed','failed','cancelled'].includes(job.state)){
    await new Promise(ok => setTimeout(ok, 500));
    const s = await fetch(`/v1/jobs/${job.id}`, {headers: headers()});
    if(!s.ok) return fail(await errorText(s));
    job = await s.json();
    bar.value = job.progress || 0;
    status(`${job.state}: ${job.frames_done} of ${job.frames_total ?? '?'} frames` + (job.eta_seconds != null ? `, ETA ${job.eta_seconds} s` : ''));
  }
  if(job.state !== 'completed') return fail(`job ${job.state}: ${job.error || ''}`);
  const res = await fetch(job.result_url, {headers: headers()});
  if(!res.ok) return fail(await errorText(res));
  const out = URL.createObjectURL(await res.blob());
  $('after').innerHTML = `<video id="after-video" src="${out}" controls muted></video>`;
  const a = $('download'); a.href = out; a.download = file.name.replace(/(\\.[^.]*)?$/, '.anonymized.mp4'); a.hidden = false;
  audit([['frames', job.result.frames], ['fps', job.result.fps], ['audio', (job.result.audio_codecs||[]).join(', ') || 'none'],
         ['boxes hidden', job.result.boxes], ['filled from tracks', job.result.remembered], ['model', job.result.model_version]]);
  status('done');
}
</script>
</body></html>
"""
