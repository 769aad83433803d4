// Command capture_go uploads one multipart form with Go's mime/multipart and net/http, the way a
// Go client usually does (Writer.CreateFormFile for files, Writer.WriteField for text fields).
//
// It reads a JSON object from stdin: {"url": "...", "parts": [...]}, each part either
// {"name": "...", "value": "..."} (a text field) or {"name": "...", "filename": "...",
// "content_b64": "...", "type": "..."} (a file; "type" is ignored: CreateFormFile always says
// application/octet-stream). It prints the Go version on success. Stdlib only.
// Used by tools/capture_clients.py.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"runtime"
)

type part struct {
	Name       string  `json:"name"`
	Value      *string `json:"value"`
	Filename   string  `json:"filename"`
	ContentB64 string  `json:"content_b64"`
}

type request struct {
	URL   string `json:"url"`
	Parts []part `json:"parts"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fail(err)
	}
	var body bytes.Buffer
	writer := multipart.NewWriter(&body)
	for _, p := range req.Parts {
		if p.Value != nil {
			if err := writer.WriteField(p.Name, *p.Value); err != nil {
				fail(err)
			}
			continue
		}
		content, err := base64.StdEncoding.DecodeString(p.ContentB64)
		if err != nil {
			fail(err)
		}
		w, err := writer.CreateFormFile(p.Name, p.Filename)
		if err != nil {
			fail(err)
		}
		if _, err := w.Write(content); err != nil {
			fail(err)
		}
	}
	if err := writer.Close(); err != nil {
		fail(err)
	}
	resp, err := http.Post(req.URL, writer.FormDataContentType(), &body)
	if err != nil {
		fail(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fail(fmt.Errorf("status %d", resp.StatusCode))
	}
	fmt.Println(runtime.Version())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "capture_go:", err)
	os.Exit(1)
}
