// Command gen compiles the FHIR R4 SearchParameter definitions into the Go
// table the search package uses (params_gen.go). It reads
// search-parameters.json and the StructureDefinitions beside it, compiles
// each expression's FHIRPath into simple path programs with the element
// type at each leaf, and marks expressions it cannot compile as unsupported
// with the reason. It never touches the network or a database.
//
// Run it through `go generate ./internal/search`; -defs overrides the
// definitions folder (default: ../shared/fhir-r4 relative to the module root).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	defs := flag.String("defs", "", "folder holding search-parameters.json and profiles-*.json")
	out := flag.String("out", "params_gen.go", "output file")
	flag.Parse()
	if *defs == "" {
		root, err := moduleRoot()
		if err != nil {
			log.Fatal(err)
		}
		*defs = filepath.Join(root, "..", "shared", "fhir-r4")
	}
	src, stats, err := generate(*defs)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, src, 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("gen: %d parameters, %d programs, %d unsupported programs", stats.params, stats.programs, stats.unsupported)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("gen: no go.mod above the working directory")
		}
		dir = parent
	}
}

type bundle struct {
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type structureDef struct {
	ResourceType   string `json:"resourceType"`
	ID             string `json:"id"`
	Kind           string `json:"kind"`
	Abstract       bool   `json:"abstract"`
	BaseDefinition string `json:"baseDefinition"`
	Derivation     string `json:"derivation"`
	Snapshot       struct {
		Element []struct {
			Path             string `json:"path"`
			ContentReference string `json:"contentReference"`
			Type             []struct {
				Code string `json:"code"`
			} `json:"type"`
		} `json:"element"`
	} `json:"snapshot"`
}

type searchParam struct {
	Code       string   `json:"code"`
	Type       string   `json:"type"`
	Base       []string `json:"base"`
	Target     []string `json:"target"`
	Expression string   `json:"expression"`
}

type element struct {
	types      []string
	contentRef string
}

type model struct {
	elements  map[string]element // by path, "Observation.effective[x]"
	resources map[string]string  // concrete resource type -> base type name
	isType    map[string]bool    // every StructureDefinition name
}

func readBundle(path string) ([]json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var bd bundle
	if err := json.Unmarshal(b, &bd); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]json.RawMessage, len(bd.Entry))
	for i, e := range bd.Entry {
		out[i] = e.Resource
	}
	return out, nil
}

func loadModel(dir string) (*model, error) {
	m := &model{elements: map[string]element{}, resources: map[string]string{}, isType: map[string]bool{}}
	for _, f := range []string{"profiles-types.json", "profiles-resources.json"} {
		entries, err := readBundle(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		for _, raw := range entries {
			var sd structureDef
			if err := json.Unmarshal(raw, &sd); err != nil {
				return nil, err
			}
			if sd.ResourceType != "StructureDefinition" || sd.Derivation == "constraint" {
				continue
			}
			m.isType[sd.ID] = true
			if sd.Kind == "resource" && !sd.Abstract {
				m.resources[sd.ID] = strings.TrimPrefix(sd.BaseDefinition, "http://hl7.org/fhir/StructureDefinition/")
			}
			for _, el := range sd.Snapshot.Element {
				e := element{contentRef: strings.TrimPrefix(el.ContentReference, "#")}
				for _, t := range el.Type {
					e.types = append(e.types, typeName(t.Code))
				}
				m.elements[el.Path] = e
			}
		}
	}
	return m, nil
}

// typeName maps FHIRPath system types to the FHIR primitive they stand for.
func typeName(code string) string {
	switch code {
	case "http://hl7.org/fhirpath/System.String":
		return "string"
	case "http://hl7.org/fhirpath/System.Boolean":
		return "boolean"
	case "http://hl7.org/fhirpath/System.Integer":
		return "integer"
	case "http://hl7.org/fhirpath/System.Decimal":
		return "decimal"
	case "http://hl7.org/fhirpath/System.DateTime":
		return "dateTime"
	case "http://hl7.org/fhirpath/System.Date":
		return "date"
	case "http://hl7.org/fhirpath/System.Time":
		return "time"
	}
	return code
}

type stats struct{ params, programs, unsupported int }

func generate(dir string) ([]byte, stats, error) {
	var st stats
	m, err := loadModel(dir)
	if err != nil {
		return nil, st, err
	}
	entries, err := readBundle(filepath.Join(dir, "search-parameters.json"))
	if err != nil {
		return nil, st, err
	}
	var buf bytes.Buffer
	buf.WriteString("// Code generated by internal/gen from the FHIR R4 search parameters; DO NOT EDIT.\n\npackage search\n\n")
	var types []string
	for t := range m.resources {
		types = append(types, t)
	}
	sort.Strings(types)
	buf.WriteString("// resourceTypes maps every concrete R4 resource type to its base type.\nvar resourceTypes = map[string]string{\n")
	for _, t := range types {
		fmt.Fprintf(&buf, "%q: %q,\n", t, m.resources[t])
	}
	buf.WriteString("}\n\n// allResourceTypes lists every concrete R4 resource type.\nvar allResourceTypes = " + strList(types) + "\n\n")
	buf.WriteString("// definitions holds every R4 SearchParameter, compiled per base type.\nvar definitions = []Definition{\n")
	shared := map[string]string{}
	var sharedOrder []string
	for _, raw := range entries {
		var sp searchParam
		if err := json.Unmarshal(raw, &sp); err != nil {
			return nil, st, err
		}
		st.params++
		target := strList(sp.Target)
		if sameSet(sp.Target, types) {
			target = "allResourceTypes"
		} else if len(sp.Target) > 8 {
			name, ok := shared[target]
			if !ok {
				name = fmt.Sprintf("targets%d", len(shared))
				shared[target] = name
				sharedOrder = append(sharedOrder, target)
			}
			target = name
		}
		fmt.Fprintf(&buf, "{Code: %q, Type: Type%s, Base: %s, Target: %s, Programs: []Program{\n",
			sp.Code, exportName(sp.Type), strList(sp.Base), target)
		for _, base := range sp.Base {
			st.programs++
			paths, why := compile(m, sp, base)
			if why != "" {
				st.unsupported++
				fmt.Fprintf(&buf, "{Base: %q, Unsupported: %q},\n", base, why)
				continue
			}
			fmt.Fprintf(&buf, "{Base: %q, Paths: []Path{", base)
			for _, p := range paths {
				buf.WriteString("{Steps: []Step{")
				for _, s := range p.Steps {
					if s.Key != "" {
						fmt.Fprintf(&buf, "{%q, %q, %q}, ", s.Name, s.Key, s.Value)
					} else {
						fmt.Fprintf(&buf, "{Name: %q}, ", s.Name)
					}
				}
				fmt.Fprintf(&buf, "}, Leaf: %q", p.Leaf)
				if p.Target != "" {
					fmt.Fprintf(&buf, ", Target: %q", p.Target)
				}
				buf.WriteString("}, ")
			}
			buf.WriteString("}},\n")
		}
		buf.WriteString("}},\n")
	}
	buf.WriteString("}\n\n// Long target lists, shared between parameters.\nvar (\n")
	for _, t := range sharedOrder {
		fmt.Fprintf(&buf, "%s = %s\n", shared[t], t)
	}
	buf.WriteString(")\n")
	src, err := format.Source(buf.Bytes())
	if err != nil {
		return nil, st, fmt.Errorf("gen: format: %w", err)
	}
	return src, st, nil
}

func sameSet(a, b []string) bool {
	in := map[string]bool{}
	for _, s := range a {
		in[s] = true
	}
	if len(in) != len(b) {
		return false
	}
	for _, s := range b {
		if !in[s] {
			return false
		}
	}
	return true
}

func exportName(t string) string {
	if t == "uri" {
		return "URI"
	}
	return strings.ToUpper(t[:1]) + t[1:]
}

func strList(s []string) string {
	if len(s) == 0 {
		return "nil"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return "[]string{" + strings.Join(q, ", ") + "}"
}

// Step, Path mirror the search package's types.
type Step struct{ Name, Key, Value string }

type Path struct {
	Steps  []Step
	Leaf   string
	Target string
}

// partial is a path under construction: the steps so far and where in the
// model it stands (elemPath is the StructureDefinition path whose children
// the next step names).
type partial struct {
	steps    []Step
	leaf     string
	elemPath string
	target   string
}

func compile(m *model, sp searchParam, base string) ([]Path, string) {
	switch sp.Type {
	case "composite", "special":
		return nil, sp.Type + " parameters are not supported"
	}
	if sp.Expression == "" {
		return nil, "no expression"
	}
	p := &parser{src: sp.Expression}
	ast, err := p.parse()
	if err != nil {
		return nil, err.Error()
	}
	c := &compiler{m: m, base: base}
	parts, err := c.eval(ast, nil)
	if err != nil {
		return nil, err.Error()
	}
	if len(parts) == 0 {
		return nil, "expression selects nothing for " + base
	}
	seen := map[string]bool{}
	var out []Path
	for _, pt := range parts {
		path := Path{Steps: pt.steps, Leaf: pt.leaf, Target: pt.target}
		k := fmt.Sprint(path)
		if !seen[k] {
			seen[k] = true
			out = append(out, path)
		}
	}
	return out, ""
}

// AST.
type node struct {
	kind  string // "ident", "union", "dot", "call", "as", "string", "eq", "is", "and"
	name  string
	left  *node
	right *node
	args  []*node
}

type parser struct {
	src string
	pos int
}

func (p *parser) parse() (*node, error) {
	n, err := p.expr()
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.pos != len(p.src) {
		return nil, fmt.Errorf("unsupported FHIRPath near %q", p.src[p.pos:])
	}
	return n, nil
}

func (p *parser) ws() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\n' || p.src[p.pos] == '\t' || p.src[p.pos] == '\r') {
		p.pos++
	}
}

func (p *parser) peek(s string) bool {
	p.ws()
	return strings.HasPrefix(p.src[p.pos:], s)
}

func (p *parser) peekWord(w string) bool {
	p.ws()
	if !strings.HasPrefix(p.src[p.pos:], w) {
		return false
	}
	end := p.pos + len(w)
	return end == len(p.src) || !isIdent(p.src[end])
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// expr := andExpr; andExpr := cmp ('and' cmp)*; cmp := union (('='|'is') union)?
func (p *parser) expr() (*node, error) {
	l, err := p.cmp()
	if err != nil {
		return nil, err
	}
	for p.peekWord("and") {
		p.pos += 3
		r, err := p.cmp()
		if err != nil {
			return nil, err
		}
		l = &node{kind: "and", left: l, right: r}
	}
	return l, nil
}

func (p *parser) cmp() (*node, error) {
	l, err := p.union()
	if err != nil {
		return nil, err
	}
	switch {
	case p.peek("!="):
		return nil, fmt.Errorf("unsupported FHIRPath operator !=")
	case p.peek("="):
		p.pos++
		r, err := p.union()
		if err != nil {
			return nil, err
		}
		return &node{kind: "eq", left: l, right: r}, nil
	case p.peekWord("is"):
		p.pos += 2
		p.ws()
		t := p.ident()
		if t == "" {
			return nil, fmt.Errorf("type name expected after is")
		}
		return &node{kind: "is", left: l, name: t}, nil
	}
	return l, nil
}

func (p *parser) union() (*node, error) {
	l, err := p.asExpr()
	if err != nil {
		return nil, err
	}
	for p.peek("|") {
		p.pos++
		r, err := p.asExpr()
		if err != nil {
			return nil, err
		}
		l = &node{kind: "union", left: l, right: r}
	}
	return l, nil
}

func (p *parser) asExpr() (*node, error) {
	n, err := p.term()
	if err != nil {
		return nil, err
	}
	if p.peekWord("as") {
		p.pos += 2
		p.ws()
		t := p.ident()
		if t == "" {
			return nil, fmt.Errorf("type name expected after as")
		}
		n = &node{kind: "as", left: n, name: t}
	}
	return n, nil
}

func (p *parser) term() (*node, error) {
	var n *node
	p.ws()
	switch {
	case p.pos >= len(p.src):
		return nil, fmt.Errorf("unexpected end of FHIRPath")
	case p.src[p.pos] == '(':
		p.pos++
		inner, err := p.expr()
		if err != nil {
			return nil, err
		}
		if !p.peek(")") {
			return nil, fmt.Errorf("missing ) in FHIRPath")
		}
		p.pos++
		n = inner
	case p.src[p.pos] == '\'':
		end := strings.IndexByte(p.src[p.pos+1:], '\'')
		if end < 0 {
			return nil, fmt.Errorf("unterminated string in FHIRPath")
		}
		n = &node{kind: "string", name: p.src[p.pos+1 : p.pos+1+end]}
		p.pos += end + 2
		return n, nil
	default:
		id := p.ident()
		if id == "" {
			return nil, fmt.Errorf("unsupported FHIRPath near %q", p.src[p.pos:])
		}
		n, _ = p.callOrIdent(nil, id)
	}
	for {
		if p.peek("[") {
			return nil, fmt.Errorf("FHIRPath indexers are not supported")
		}
		if !p.peek(".") {
			return n, nil
		}
		p.pos++
		id := p.ident()
		if id == "" {
			return nil, fmt.Errorf("identifier expected after . in FHIRPath")
		}
		var err error
		n, err = p.callOrIdent(n, id)
		if err != nil {
			return nil, err
		}
	}
}

func (p *parser) callOrIdent(recv *node, id string) (*node, error) {
	if !p.peek("(") {
		return &node{kind: "dot", left: recv, name: id}, nil
	}
	p.pos++
	c := &node{kind: "call", left: recv, name: id}
	for !p.peek(")") {
		a, err := p.expr()
		if err != nil {
			return nil, err
		}
		c.args = append(c.args, a)
		if p.peek(",") {
			p.pos++
		}
	}
	p.pos++
	return c, nil
}

func (p *parser) ident() string {
	p.ws()
	start := p.pos
	for p.pos < len(p.src) && isIdent(p.src[p.pos]) {
		p.pos++
	}
	return p.src[start:p.pos]
}

type compiler struct {
	m    *model
	base string
}

func (c *compiler) eval(n *node, in []partial) ([]partial, error) {
	switch n.kind {
	case "union":
		l, err := c.eval(n.left, in)
		if err != nil {
			return nil, err
		}
		r, err := c.eval(n.right, in)
		if err != nil {
			return nil, err
		}
		return append(l, r...), nil
	case "dot":
		if n.left == nil && in == nil {
			return c.root(n.name)
		}
		var recv []partial
		if n.left != nil {
			var err error
			if recv, err = c.eval(n.left, in); err != nil {
				return nil, err
			}
		} else {
			recv = in
		}
		return c.child(recv, n.name)
	case "as":
		recv, err := c.eval(n.left, in)
		if err != nil {
			return nil, err
		}
		return c.narrow(recv, n.name)
	case "call":
		var recv []partial
		if n.left != nil {
			var err error
			if recv, err = c.eval(n.left, in); err != nil {
				return nil, err
			}
		} else {
			recv = in
		}
		return c.call(recv, n)
	}
	return nil, fmt.Errorf("unsupported FHIRPath construct %s", n.kind)
}

func (c *compiler) root(name string) ([]partial, error) {
	if name == c.base {
		return []partial{{elemPath: name, leaf: name}}, nil
	}
	if _, ok := c.m.resources[name]; ok || name == "Resource" || name == "DomainResource" {
		return nil, nil // a union term for another base type
	}
	// An unrooted path ("name | alias") starts at the base type.
	return c.child([]partial{{elemPath: c.base, leaf: c.base}}, name)
}

func (c *compiler) child(recv []partial, name string) ([]partial, error) {
	var out []partial
	for _, p := range recv {
		ep := p.elemPath + "." + name
		el, ok := c.m.elements[ep]
		choice := false
		if !ok {
			if el, ok = c.m.elements[ep+"[x]"]; ok {
				choice = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown element %s", ep)
		}
		if el.contentRef != "" {
			ep = el.contentRef
			el = c.m.elements[ep]
		}
		for _, t := range el.types {
			jsonName := name
			if choice {
				jsonName = name + strings.ToUpper(t[:1]) + t[1:]
			}
			next := ep
			if t != "BackboneElement" && t != "Element" {
				next = t // children of a data type live in its own definition
			}
			steps := append(append([]Step(nil), p.steps...), Step{Name: jsonName})
			out = append(out, partial{steps: steps, leaf: t, elemPath: next})
		}
	}
	return out, nil
}

func (c *compiler) narrow(recv []partial, t string) ([]partial, error) {
	t = strings.TrimPrefix(strings.TrimPrefix(t, "FHIR."), "System.")
	var out []partial
	for _, p := range recv {
		if p.leaf == t {
			out = append(out, p)
		}
	}
	if len(out) == 0 && len(recv) > 0 {
		return nil, fmt.Errorf("no element of type %s", t)
	}
	return out, nil
}

func (c *compiler) call(recv []partial, n *node) ([]partial, error) {
	switch n.name {
	case "as", "ofType":
		if len(n.args) != 1 || n.args[0].kind != "dot" || n.args[0].left != nil {
			return nil, fmt.Errorf("%s() needs a type name", n.name)
		}
		return c.narrow(recv, n.args[0].name)
	case "extension":
		if len(n.args) != 1 || n.args[0].kind != "string" {
			return nil, fmt.Errorf("extension() needs a url")
		}
		out, err := c.child(recv, "extension")
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].steps[len(out[i].steps)-1].Key = "url"
			out[i].steps[len(out[i].steps)-1].Value = n.args[0].name
		}
		return out, nil
	case "where":
		if len(n.args) != 1 {
			return nil, fmt.Errorf("where() needs one argument")
		}
		a := n.args[0]
		switch {
		case a.kind == "is" && a.left.kind == "call" && a.left.name == "resolve" && a.left.left == nil:
			var out []partial
			for _, p := range recv {
				if p.leaf != "Reference" {
					return nil, fmt.Errorf("resolve() on %s", p.leaf)
				}
				p.target = a.name
				out = append(out, p)
			}
			return out, nil
		case a.kind == "eq" && a.left.kind == "dot" && a.left.left == nil && a.right.kind == "string":
			var out []partial
			for _, p := range recv {
				if len(p.steps) == 0 || p.steps[len(p.steps)-1].Key != "" {
					return nil, fmt.Errorf("unsupported where() filter")
				}
				if _, ok := c.m.elements[p.elemPath+"."+a.left.name]; !ok {
					return nil, fmt.Errorf("unknown element %s.%s", p.elemPath, a.left.name)
				}
				steps := append([]Step(nil), p.steps...)
				steps[len(steps)-1].Key = a.left.name
				steps[len(steps)-1].Value = a.right.name
				p.steps = steps
				out = append(out, p)
			}
			return out, nil
		}
		return nil, fmt.Errorf("unsupported where() filter")
	}
	return nil, fmt.Errorf("unsupported FHIRPath function %s()", n.name)
}
