// Package dashboard is the web dashboard's embedded front end: a small script that renders every
// screen from the JSON API (/api/v1), its style sheet, and the two HTML shells (the signed-in
// page and the sign-in form). Static files are served under content-hashed names so that
// browsers may cache them forever; the shells are rendered per request and never cached.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"mime"
	"path"
	"strings"
)

//go:embed assets
var files embed.FS

// ContentSecurityPolicy allows only this origin's own scripts, styles and API: no inline
// script, no eval, no framing, no form posting elsewhere. Data shown on a page (repository
// names, error messages) is inserted as text, so even a hostile name cannot run.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// AssetPrefix is the path the hashed files are served under.
const AssetPrefix = "/assets/"

// Asset is one static file.
type Asset struct {
	Content     []byte
	ContentType string
}

// Site is the loaded front end.
type Site struct {
	byHashedName map[string]Asset
	urls         map[string]string // "app.js" -> "/assets/app.1a2b3c4d5e6f.js"
	app, signIn  *template.Template
}

// New loads the embedded files and hashes them.
func New() (*Site, error) {
	s := &Site{byHashedName: map[string]Asset{}, urls: map[string]string{}}
	static, err := fs.Sub(files, "assets/static")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(static, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ext := path.Ext(p)
		hashed := strings.TrimSuffix(p, ext) + "." + hex.EncodeToString(sum[:6]) + ext
		ct := mime.TypeByExtension(ext)
		if ct == "" {
			ct = "application/octet-stream"
		}
		s.byHashedName[hashed] = Asset{Content: b, ContentType: ct}
		s.urls[p] = AssetPrefix + hashed
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load dashboard assets: %w", err)
	}
	funcs := template.FuncMap{"asset": func(name string) (string, error) {
		u, ok := s.urls[name]
		if !ok {
			return "", fmt.Errorf("no dashboard asset %q", name)
		}
		return u, nil
	}}
	if s.app, err = template.New("app.html").Funcs(funcs).ParseFS(files, "assets/app.html"); err != nil {
		return nil, fmt.Errorf("parse dashboard page: %w", err)
	}
	if s.signIn, err = template.New("signin.html").Funcs(funcs).ParseFS(files, "assets/signin.html"); err != nil {
		return nil, fmt.Errorf("parse sign-in page: %w", err)
	}
	return s, nil
}

// Asset returns a static file by its hashed name (the part after AssetPrefix).
func (s *Site) Asset(hashedName string) (Asset, bool) {
	a, ok := s.byHashedName[hashedName]
	return a, ok
}

// AssetURL is the hashed path of a static file, for tests and links.
func (s *Site) AssetURL(name string) string { return s.urls[name] }

// AppPage is what the signed-in shell needs.
type AppPage struct {
	Tenant    string
	CSRFToken string
	Version   string
}

// SignInPage is what the sign-in form needs.
type SignInPage struct {
	Next, CSRFToken string
	// Error is why the last attempt failed; Notice a neutral message ("You are signed out.").
	Error, Notice string
}

// RenderApp writes the signed-in shell.
func (s *Site) RenderApp(w io.Writer, p AppPage) error { return render(w, s.app, p) }

// RenderSignIn writes the sign-in page.
func (s *Site) RenderSignIn(w io.Writer, p SignInPage) error { return render(w, s.signIn, p) }

// render buffers the page so that a template error never leaves half a page behind.
func render(w io.Writer, t *template.Template, data any) error {
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return fmt.Errorf("render %s: %w", t.Name(), err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
