// lua-health runs an Argo CD resource health script (Lua) the way Argo CD does: gopher-lua, the
// standard libraries skipped except package, base and table (Argo CD adds a "safe" os library; the
// CloudOptim scripts do not use it, so it is not offered here), a 1 s deadline, the object as the
// global `obj` (numbers as Lua numbers, as Argo CD's decodeValue), and the returned table read as
// {status, message} with an invalid status turned into Unknown.
//
//	lua-health run SCRIPT OBJECT.yaml      print the health as JSON: {"status":"...","message":"..."}
//	lua-health test SCRIPT TESTS.yaml      run Argo CD's health_test.yaml format:
//	                                       tests: [{healthStatus: {status, message}, inputPath}]
//	                                       (inputPath relative to TESTS.yaml); exit 1 on a mismatch
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"gopkg.in/yaml.v3"
)

// Health is what Argo CD reads from the returned table.
type Health struct {
	Status  string `json:"status" yaml:"status"`
	Message string `json:"message" yaml:"message"`
}

var valid = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

// load reads a YAML or JSON object and returns it as JSON-decoded data (float64 numbers).
func load(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc interface{}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var obj map[string]interface{}
	if err := json.Unmarshal(j, &obj); err != nil {
		return nil, fmt.Errorf("%s: not an object: %w", path, err)
	}
	return obj, nil
}

func decode(l *lua.LState, v interface{}) lua.LValue {
	switch c := v.(type) {
	case bool:
		return lua.LBool(c)
	case float64:
		return lua.LNumber(c)
	case string:
		return lua.LString(c)
	case []interface{}:
		t := l.CreateTable(len(c), 0)
		for _, item := range c {
			t.Append(decode(l, item))
		}
		return t
	case map[string]interface{}:
		t := l.CreateTable(0, len(c))
		for k, item := range c {
			t.RawSetH(lua.LString(k), decode(l, item))
		}
		return t
	}
	return lua.LNil
}

func run(script string, obj map[string]interface{}) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decode(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, err
	}
	ret := l.Get(-1)
	table, ok := ret.(*lua.LTable)
	if !ok {
		return Health{}, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	str := func(key string) (string, error) {
		switch v := table.RawGetString(key).(type) {
		case *lua.LNilType:
			return "", nil
		case lua.LString:
			return string(v), nil
		default:
			return "", fmt.Errorf("hs.%s is a %s, not a string", key, v.Type())
		}
	}
	var h Health
	var err error
	if h.Status, err = str("status"); err != nil {
		return Health{}, err
	}
	if h.Message, err = str("message"); err != nil {
		return Health{}, err
	}
	if !valid[h.Status] {
		return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return h, nil
}

func main() {
	if len(os.Args) != 4 || (os.Args[1] != "run" && os.Args[1] != "test") {
		fmt.Fprintln(os.Stderr, "usage: lua-health run SCRIPT OBJECT.yaml | lua-health test SCRIPT TESTS.yaml")
		os.Exit(2)
	}
	src, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	script := string(src)
	if os.Args[1] == "run" {
		obj, err := load(os.Args[3])
		if err == nil {
			var h Health
			if h, err = run(script, obj); err == nil {
				out, _ := json.Marshal(h)
				fmt.Println(string(out))
				return
			}
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	raw, err := os.ReadFile(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var tests struct {
		Tests []struct {
			HealthStatus Health `yaml:"healthStatus"`
			InputPath    string `yaml:"inputPath"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(raw, &tests); err != nil || len(tests.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no tests (%v)\n", os.Args[3], err)
		os.Exit(2)
	}
	failed := 0
	for _, t := range tests.Tests {
		path := filepath.Join(filepath.Dir(os.Args[3]), t.InputPath)
		obj, err := load(path)
		var got Health
		if err == nil {
			got, err = run(script, obj)
		}
		switch {
		case err != nil:
			failed++
			fmt.Printf("FAIL %s: %v\n", path, err)
		case got != t.HealthStatus:
			failed++
			fmt.Printf("FAIL %s\n  want %s: %q\n  got  %s: %q\n", path, t.HealthStatus.Status, t.HealthStatus.Message, got.Status, got.Message)
		default:
			fmt.Printf("ok   %s -> %s: %s\n", path, got.Status, got.Message)
		}
	}
	if failed > 0 {
		fmt.Printf("%d of %d failed\n", failed, len(tests.Tests))
		os.Exit(1)
	}
}
