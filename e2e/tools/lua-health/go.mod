// Pins the Lua interpreter Argo CD runs resource health scripts with (gopher-lua, Lua 5.1), for
// lua-health, built by ../setup.sh to test examples/gitops/argocd/health/*.lua.
module cloudoptim.local/e2e/lua-health

go 1.22

require (
	github.com/yuin/gopher-lua v1.1.1
	gopkg.in/yaml.v3 v3.0.1
)
