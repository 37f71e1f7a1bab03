// tus-js-client under Node, driven by tests/e2e/test_tus.py: one JSON argument, one JSON line out.
//   {endpoint, token, file, filename, chunkSize, mode: "upload" | "pause" | "terminate", metadata?}
// "upload": the whole file (retries on, so a dropped connection is resumed from the server's offset);
// "pause": abort after the first chunk, start again (HEAD, then the rest);
// "terminate": abort after the first chunk, then DELETE the upload (tus termination).
import { readFileSync } from 'node:fs'
import * as tus from 'tus-js-client'

const args = JSON.parse(process.argv[2])
const data = readFileSync(args.file)
const headers = { Authorization: `Bearer ${args.token}` }
let retries = 0
let paused = false

function finish (result, code = 0) {
  process.stdout.write(JSON.stringify(result) + '\n')
  process.exit(code)
}

const upload = new tus.Upload(data, {
  endpoint: args.endpoint,
  headers,
  chunkSize: args.chunkSize,
  metadata: { filename: args.filename, ...(args.metadata || {}) },
  retryDelays: [0, 250, 500, 1000, 2000],
  onShouldRetry (err, attempt, options) {
    retries += 1
    return true
  },
  onError (err) {
    finish({ error: String(err), retries }, 1)
  },
  onChunkComplete (chunkSize, bytesAccepted, bytesTotal) {
    if (paused || args.mode === 'upload') return
    paused = true
    upload.abort().then(async () => {
      if (args.mode === 'pause') {
        setTimeout(() => upload.start(), 200)
        return
      }
      await tus.Upload.terminate(upload.url, { headers })
      finish({ url: upload.url, offset: bytesAccepted, terminated: true, retries })
    })
  },
  onSuccess () {
    finish({ url: upload.url, retries, paused })
  }
})
upload.start()
