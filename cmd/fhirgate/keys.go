package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fhirgate/fhirgate/internal/database"
	"github.com/fhirgate/fhirgate/internal/phi"
	"github.com/fhirgate/fhirgate/internal/store"
)

// fhirgate keys: PHI key management. It reads the same configuration as
// serve (DATABASE_URL, FHIRGATE_KEY_PROVIDER, VAULT_*, FHIRGATE_KEYRING,
// FHIRGATE_PHI_POLICY) and never prints key material, wrapped or not, or
// PHI.

const keysUsage = `usage: fhirgate keys <command> [flags]

commands:
  status [-json]
        the key provider's KEK versions, every stored (wrapped) data key and
        the KEK version it is wrapped under, and how many rows of each table
        each tenant has under each data-key epoch (0: not sealed)
  rotate [-min-decryption-version] [-rewrap-only] [-batch N]
        add a KEK version and rewrap every stored data key under it (data is
        not touched); with -min-decryption-version, then refuse older KEK
        versions, so that wrapped keys in old backups become useless
  reencrypt [-tenant T] [-resume] [-batch N] [-settle D]
        give each tenant (or T) a new data-key epoch and re-encrypt its rows
        under it while the gateway keeps serving; -resume continues to the
        newest epoch instead of making another
  shred -tenant T -yes
        destroy tenant T's data keys: its encrypted PHI becomes unreadable
`

// A running gateway re-reads a tenant's newest data-key epoch every
// phi.KeyOptions.Refresh (30 s by default; serve does not change it), so it
// may keep writing under the previous epoch that long after reencrypt makes
// a new one. reencrypt waits that long plus a margin before its final pass.
const (
	keysGatewayRefresh = 30 * time.Second
	keysRefreshSettle  = keysGatewayRefresh + 5*time.Second
)

// keysCmd: fhirgate keys status|rotate|reencrypt|shred.
func keysCmd(ctx context.Context, args []string, logger *slog.Logger) error {
	return runKeys(ctx, args, logger, os.Stdout, os.Stderr)
}

func runKeys(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError("keys: want status, rotate, reencrypt or shred (fhirgate keys -h)")
	}
	switch args[0] {
	case "status":
		return keysStatusCmd(ctx, args[1:], logger, stdout, stderr)
	case "rotate":
		return auditAdmin(ctx, "key-rotate", keysRotateCmd(ctx, args[1:], logger, stdout, stderr), logger)
	case "reencrypt":
		return auditAdmin(ctx, "key-reencrypt", keysReencryptCmd(ctx, args[1:], logger, stdout, stderr), logger)
	case "shred":
		return auditAdmin(ctx, "key-shred", keysShredCmd(ctx, args[1:], logger, stdout, stderr), logger)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	return usageError(fmt.Sprintf("keys: unknown command %q: want status, rotate, reencrypt or shred", args[0]))
}

func keysFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("keys "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseKeysFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0)))
	}
	return nil
}

// keysEnv is what every keys command works on: the database and the key
// provider, configured as serve configures them.
type keysEnv struct {
	pc    phiConfig
	pool  *pgxpool.Pool
	st    *store.Store
	prov  phi.KeyProvider
	close func()
}

// openKeysEnv opens the database and the key provider. With needProv
// false, a provider that cannot be opened is logged and env.prov is nil.
func openKeysEnv(ctx context.Context, what string, needProv bool, logger *slog.Logger) (*keysEnv, error) {
	pc, err := phiConfigFromEnv(dataDirFromEnv())
	if err != nil {
		return nil, err
	}
	dbc, err := database.ConfigFromEnv()
	if err != nil {
		return nil, err
	}
	if dbc.URL == "" {
		return nil, fmt.Errorf("DATABASE_URL is not set: keys %s needs the gateway's database", what)
	}
	pool, err := database.Open(ctx, dbc)
	if err != nil {
		return nil, err
	}
	prov, closeProv, err := openProvider(ctx, pc, logger)
	if err != nil {
		if needProv {
			pool.Close()
			return nil, err
		}
		logger.Warn("the key provider cannot be opened", "error", err.Error())
		prov, closeProv = nil, func() {}
	}
	return &keysEnv{pc: pc, pool: pool, st: store.New(pool), prov: prov, close: func() { closeProv(); pool.Close() }}, nil
}

// keysStatus is `keys status -json`.
type keysStatus struct {
	Provider struct {
		Name                 string `json:"name"`
		LatestVersion        int    `json:"latest_version"`
		MinDecryptionVersion int    `json:"min_decryption_version"`
	} `json:"provider"`
	Keys    []statusKey    `json:"keys"`
	Rows    []statusRows   `json:"rows"`
	Tenants []statusTenant `json:"tenants"`
	// KeysBehind is the number of stored keys wrapped under a KEK version
	// below the latest (OldestKEKVersion the oldest of them).
	KeysBehind       int `json:"keys_behind"`
	OldestKEKVersion int `json:"oldest_kek_version,omitempty"`
	// AllKeysOnLatest: every stored key is wrapped under the latest KEK
	// version, so min_decryption_version can be raised to it.
	AllKeysOnLatest bool `json:"all_keys_on_latest"`
	// CanRaiseMinDecryption: AllKeysOnLatest and min_decryption_version is
	// below the latest version.
	CanRaiseMinDecryption bool `json:"can_raise_min_decryption_version"`
}

type statusKey struct {
	Tenant     string    `json:"tenant"`
	Purpose    string    `json:"purpose"`
	Epoch      int       `json:"epoch"`
	KEKVersion int       `json:"kek_version"`
	Created    time.Time `json:"created"`
}

type statusRows struct {
	Table  string `json:"table"`
	Tenant string `json:"tenant"`
	Epoch  int    `json:"epoch"`
	Rows   int64  `json:"rows"`
	// KeyMissing: rows sealed under an epoch whose data key does not
	// exist (shredded): they cannot be decrypted.
	KeyMissing bool `json:"key_missing,omitempty"`
}

type statusTenant struct {
	Tenant string `json:"tenant"`
	// NewestEpoch is the tenant's newest data-key epoch (writes use it);
	// 0 when it has no data key.
	NewestEpoch int `json:"newest_epoch"`
	// RowsOnOlderEpochs counts rows not sealed under NewestEpoch (epoch 0
	// included): what `keys reencrypt -resume` would move.
	RowsOnOlderEpochs int64 `json:"rows_on_older_epochs"`
}

func keysStatusCmd(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := keysFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print JSON for machines")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	env, err := openKeysEnv(ctx, "status", true, logger)
	if err != nil {
		return err
	}
	defer env.close()
	s, err := gatherStatus(ctx, env)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	printStatus(stdout, s)
	return nil
}

func gatherStatus(ctx context.Context, env *keysEnv) (*keysStatus, error) {
	info, err := env.prov.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("key provider %s: %w", env.prov.Name(), err)
	}
	all, err := env.st.AllKeys(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := env.st.EpochCounts(ctx)
	if err != nil {
		return nil, err
	}
	s := &keysStatus{Keys: []statusKey{}, Rows: []statusRows{}, Tenants: []statusTenant{}}
	s.Provider.Name, s.Provider.LatestVersion, s.Provider.MinDecryptionVersion = info.Name, info.LatestVersion, info.MinDecryptionVersion
	type dk struct {
		tenant string
		epoch  int
	}
	haveKey := map[dk]bool{}
	newest := map[string]int{}
	for _, k := range all {
		s.Keys = append(s.Keys, statusKey{Tenant: k.Tenant, Purpose: k.Purpose, Epoch: k.Epoch, KEKVersion: phi.KeyVersion(k.Wrapped), Created: k.Created.UTC()})
		if k.Purpose == phi.PurposeData {
			haveKey[dk{k.Tenant, k.Epoch}] = true
			newest[k.Tenant] = max(newest[k.Tenant], k.Epoch)
		}
	}
	s.KeysBehind, s.OldestKEKVersion = phi.Behind(all, info.LatestVersion)
	s.AllKeysOnLatest = s.KeysBehind == 0
	s.CanRaiseMinDecryption = s.AllKeysOnLatest && info.MinDecryptionVersion < info.LatestVersion
	older := map[string]int64{}
	var tenants []string
	for _, c := range counts {
		s.Rows = append(s.Rows, statusRows{Table: c.Table, Tenant: c.Tenant, Epoch: c.Epoch, Rows: c.Rows,
			KeyMissing: c.Epoch > 0 && !haveKey[dk{c.Tenant, c.Epoch}]})
		if c.Epoch != newest[c.Tenant] {
			older[c.Tenant] += c.Rows
		}
		tenants = append(tenants, c.Tenant)
	}
	for t := range newest {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	for _, t := range slices.Compact(tenants) {
		s.Tenants = append(s.Tenants, statusTenant{Tenant: t, NewestEpoch: newest[t], RowsOnOlderEpochs: older[t]})
	}
	return s, nil
}

func printStatus(w io.Writer, s *keysStatus) {
	fmt.Fprintf(w, "key provider: %s\n  latest KEK version:     %d\n  min_decryption_version: %d\n\n",
		s.Provider.Name, s.Provider.LatestVersion, s.Provider.MinDecryptionVersion)

	fmt.Fprintf(w, "stored keys (wrapped; data keys by epoch and the blind-index key): %d\n", len(s.Keys))
	if len(s.Keys) > 0 {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  TENANT\tPURPOSE\tEPOCH\tKEK\tCREATED")
		for _, k := range s.Keys {
			fmt.Fprintf(tw, "  %s\t%s\t%d\tv%d\t%s\n", k.Tenant, k.Purpose, k.Epoch, k.KEKVersion, k.Created.Format(time.RFC3339))
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nrows per data-key epoch (epoch 0: not sealed):\n")
	if len(s.Rows) == 0 {
		fmt.Fprintln(w, "  (no rows)")
	} else {
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  TABLE\tTENANT\tEPOCH\tROWS")
		for _, r := range s.Rows {
			note := ""
			if r.KeyMissing {
				note = "  (no key: unreadable, shredded)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d%s\n", r.Table, r.Tenant, r.Epoch, r.Rows, note)
		}
		tw.Flush()
	}

	if len(s.Tenants) > 0 {
		fmt.Fprintln(w, "\ntenants:")
		for _, t := range s.Tenants {
			switch {
			case t.NewestEpoch == 0:
				fmt.Fprintf(w, "  %s: no data key; %d rows\n", t.Tenant, t.RowsOnOlderEpochs)
			case t.RowsOnOlderEpochs == 0:
				fmt.Fprintf(w, "  %s: newest data-key epoch %d; every row is on it\n", t.Tenant, t.NewestEpoch)
			default:
				fmt.Fprintf(w, "  %s: newest data-key epoch %d; %d rows on other epochs (fhirgate keys reencrypt -resume -tenant %s)\n",
					t.Tenant, t.NewestEpoch, t.RowsOnOlderEpochs, t.Tenant)
			}
		}
	}

	fmt.Fprintln(w)
	switch {
	case !s.AllKeysOnLatest:
		fmt.Fprintf(w, "KEK: %d of %d stored keys are wrapped under versions below the latest v%d (the oldest under v%d): "+
			"min_decryption_version cannot be raised until they are rewrapped (fhirgate keys rotate, or keys rotate -rewrap-only)\n",
			s.KeysBehind, len(s.Keys), s.Provider.LatestVersion, s.OldestKEKVersion)
	case s.CanRaiseMinDecryption:
		fmt.Fprintf(w, "KEK: all %d stored keys are wrapped under the latest version v%d: min_decryption_version can be raised from %d to %d "+
			"(fhirgate keys rotate -rewrap-only -min-decryption-version)\n",
			len(s.Keys), s.Provider.LatestVersion, s.Provider.MinDecryptionVersion, s.Provider.LatestVersion)
	default:
		fmt.Fprintf(w, "KEK: all %d stored keys are wrapped under the latest version v%d, and min_decryption_version is %d\n",
			len(s.Keys), s.Provider.LatestVersion, s.Provider.MinDecryptionVersion)
	}
}

func keysRotateCmd(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := keysFlags("rotate", stderr)
	raise := fs.Bool("min-decryption-version", false, "after rewrapping, raise the provider's min_decryption_version to the latest KEK version")
	rewrapOnly := fs.Bool("rewrap-only", false, "do not add a KEK version: only rewrap the keys not yet under the latest one (to finish an interrupted rotate)")
	batch := fs.Int("batch", phi.DefaultRewrapBatch, "keys per provider call")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	if *batch < 1 {
		return usageError(fmt.Sprintf("keys rotate: -batch %d: want a positive number", *batch))
	}
	env, err := openKeysEnv(ctx, "rotate", true, logger)
	if err != nil {
		return err
	}
	defer env.close()
	before, err := env.prov.Info(ctx)
	if err != nil {
		return fmt.Errorf("key provider %s: %w", env.prov.Name(), err)
	}
	if !*rewrapOnly {
		if err := env.prov.Rotate(ctx); err != nil {
			return fmt.Errorf("rotate %s: %w", env.prov.Name(), err)
		}
	}
	rep, err := phi.RewrapAll(ctx, env.prov, env.st, *batch)
	switch {
	case *rewrapOnly:
	case rep.Version > 0:
		fmt.Fprintf(stdout, "rotated %s: KEK version v%d -> v%d\n", env.prov.Name(), before.LatestVersion, rep.Version)
	default:
		fmt.Fprintf(stdout, "rotated %s: a KEK version was added after v%d\n", env.prov.Name(), before.LatestVersion)
	}
	if err != nil {
		return fmt.Errorf("%w (rerun with: fhirgate keys rotate -rewrap-only)", err)
	}
	if rep.Rewrapped > 0 {
		fmt.Fprintf(stdout, "rewrapped %d of %d stored keys under v%d (from %s) in %d provider calls; %d were already on v%d; data untouched\n",
			rep.Rewrapped, rep.Keys, rep.Version, rep.FromString(), rep.Calls, rep.Current, rep.Version)
	} else {
		fmt.Fprintf(stdout, "all %d stored keys are wrapped under v%d; nothing to rewrap\n", rep.Keys, rep.Version)
	}
	if !*raise {
		fmt.Fprintf(stdout, "min_decryption_version stays %d: keys wrapped under older versions (in backups, say) can still be unwrapped; "+
			"raise it with fhirgate keys rotate -rewrap-only -min-decryption-version\n", before.MinDecryptionVersion)
		return nil
	}
	if err := phi.RaiseMinDecryption(ctx, env.prov, env.st); err != nil {
		return err
	}
	after, err := env.prov.Info(ctx)
	if err != nil {
		return fmt.Errorf("key provider %s: %w", env.prov.Name(), err)
	}
	if after.MinDecryptionVersion == before.MinDecryptionVersion {
		fmt.Fprintf(stdout, "min_decryption_version is already %d, the latest KEK version\n", after.MinDecryptionVersion)
		return nil
	}
	fmt.Fprintf(stdout, "min_decryption_version raised from %d to %d: keys wrapped under older KEK versions, in backups too, can no longer be unwrapped\n",
		before.MinDecryptionVersion, after.MinDecryptionVersion)
	return nil
}

func keysReencryptCmd(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := keysFlags("reencrypt", stderr)
	only := fs.String("tenant", "", "re-encrypt this tenant only (default: every tenant)")
	resume := fs.Bool("resume", false, "continue to each tenant's newest data-key epoch instead of making a new one")
	batch := fs.Int("batch", 500, "rows per database round trip")
	settle := fs.Duration("settle", keysRefreshSettle, "after the first pass, wait until each new epoch is this old, so running gateways write under it, then make a final pass (0: no wait)")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	if *batch < 1 {
		return usageError(fmt.Sprintf("keys reencrypt: -batch %d: want a positive number", *batch))
	}
	if *settle < 0 {
		return usageError(fmt.Sprintf("keys reencrypt: -settle %s: want a duration of 0 or more", *settle))
	}
	env, err := openKeysEnv(ctx, "reencrypt", true, logger)
	if err != nil {
		return err
	}
	defer env.close()
	if !env.pc.Enabled {
		return errors.New("FHIRGATE_PHI=off: keys reencrypt encrypts stored PHI and needs PHI encryption on")
	}
	pol, err := phi.LoadPolicy(env.pc.Policy)
	if err != nil {
		return fmt.Errorf("FHIRGATE_PHI_POLICY: %w", err)
	}
	keys := phi.NewKeys(env.prov, env.st, phi.KeyOptions{TTL: env.pc.KeyTTL, MaxKeys: env.pc.KeyCache})
	defer keys.Flush()
	env.st.WithSealer(phi.NewService(pol, keys))

	known, err := env.st.Tenants(ctx)
	if err != nil {
		return err
	}
	tenants := known
	if *only != "" {
		if !slices.Contains(known, *only) {
			return fmt.Errorf("keys reencrypt: -tenant %s: the tenant has no data and no keys", *only)
		}
		tenants = []string{*only}
	}
	counts, err := env.st.EpochCounts(ctx)
	if err != nil {
		return err
	}

	type job struct {
		tenant  string
		target  int
		created time.Time
		moved   int
	}
	var jobs []*job
	for _, tenant := range tenants {
		stored, err := env.st.TenantKeys(ctx, tenant)
		if err != nil {
			return err
		}
		newest, _ := newestData(stored)
		var sealed int64
		for _, c := range counts {
			if c.Tenant == tenant && c.Epoch > 0 {
				sealed += c.Rows
			}
		}
		if newest == 0 && sealed > 0 {
			// Its keys were destroyed: making a new key would not bring
			// the data back, and the rows cannot be opened.
			if *only != "" {
				return fmt.Errorf("keys reencrypt: tenant %s has %d sealed rows but no data key (shredded?)", tenant, sealed)
			}
			fmt.Fprintf(stderr, "skipping tenant %s: %d sealed rows but no data key (shredded?)\n", tenant, sealed)
			continue
		}
		j := &job{tenant: tenant, target: newest}
		if !*resume || newest == 0 {
			if j.target, err = keys.NewEpoch(ctx, tenant); err != nil {
				return fmt.Errorf("keys reencrypt: tenant %s: new data key epoch: %w", tenant, err)
			}
			stored, err = env.st.TenantKeys(ctx, tenant)
			if err != nil {
				return err
			}
		}
		for _, k := range stored {
			if k.Purpose == phi.PurposeData && k.Epoch == j.target {
				j.created = k.Created
			}
		}
		var left int64
		for _, c := range counts {
			if c.Tenant == tenant && c.Epoch != j.target {
				left += c.Rows
			}
		}
		fmt.Fprintf(stderr, "tenant %s: re-encrypting about %d rows to data-key epoch %d\n", tenant, left, j.target)
		n, err := reencryptTenant(ctx, env.st, tenant, j.target, *batch, left, stderr)
		j.moved += n
		if err != nil {
			return err
		}
		jobs = append(jobs, j)
	}

	// Gateways that have not yet re-read the newest epoch still write under
	// the previous one: wait until they have, then move what they wrote.
	if *settle > 0 && len(jobs) > 0 {
		var until time.Time
		for _, j := range jobs {
			if t := j.created.Add(*settle); t.After(until) {
				until = t
			}
		}
		if wait := time.Until(until); wait > 0 {
			fmt.Fprintf(stderr, "waiting %s for running gateways to switch to the new epochs (they re-read them every %s), then a final pass\n",
				wait.Round(time.Second), keysGatewayRefresh)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for _, j := range jobs {
			n, err := reencryptTenant(ctx, env.st, j.tenant, j.target, *batch, 0, stderr)
			j.moved += n
			if err != nil {
				return err
			}
		}
	}
	for _, j := range jobs {
		fmt.Fprintf(stdout, "tenant %s: %d rows re-encrypted to data-key epoch %d\n", j.tenant, j.moved, j.target)
	}
	if len(jobs) == 0 {
		fmt.Fprintln(stdout, "no tenant to re-encrypt")
	}
	return nil
}

// newestData returns a tenant's newest data-key epoch and its key.
func newestData(stored []phi.StoredKey) (int, phi.StoredKey) {
	var best phi.StoredKey
	for _, k := range stored {
		if k.Purpose == phi.PurposeData && k.Epoch > best.Epoch {
			best = k
		}
	}
	return best.Epoch, best
}

// reencryptTenant moves a tenant's rows to epoch target until none is
// left, printing progress to w at most once a second. It stops when a
// newer epoch appears (another reencrypt started): the rows would then
// move back and forth between the two.
func reencryptTenant(ctx context.Context, st *store.Store, tenant string, target, batch int, left int64, w io.Writer) (int, error) {
	start := time.Now()
	last := start
	moved := 0
	progress := func(final bool) {
		el := time.Since(start)
		rate := float64(moved) / max(el.Seconds(), 1e-3)
		rest := ""
		if left > 0 {
			rest = fmt.Sprintf(", about %d left", max(left-int64(moved), 0))
		}
		end := "\r"
		if final {
			end = "\n"
		}
		fmt.Fprintf(w, "tenant %s -> epoch %d: %d rows moved%s, %.0f rows/s%s", tenant, target, moved, rest, rate, end)
	}
	for {
		if err := ctx.Err(); err != nil {
			progress(true)
			return moved, fmt.Errorf("keys reencrypt: tenant %s: stopped after %d rows (resume with -resume): %w", tenant, moved, err)
		}
		n, err := st.Reencrypt(ctx, tenant, target, batch)
		moved += n
		if err != nil {
			progress(true)
			return moved, fmt.Errorf("keys reencrypt: tenant %s to epoch %d after %d rows (resume with -resume): %w", tenant, target, moved, err)
		}
		if n == 0 {
			break
		}
		stored, err := st.TenantKeys(ctx, tenant)
		if err != nil {
			return moved, err
		}
		if newest, _ := newestData(stored); newest != target {
			progress(true)
			return moved, fmt.Errorf("keys reencrypt: tenant %s: data-key epoch %d was made while re-encrypting to epoch %d (another keys reencrypt?); "+
				"rerun with -resume to move every row to the newest epoch", tenant, newest, target)
		}
		if time.Since(last) >= time.Second {
			last = time.Now()
			progress(false)
		}
	}
	progress(true)
	return moved, nil
}

func keysShredCmd(ctx context.Context, args []string, logger *slog.Logger, stdout, stderr io.Writer) error {
	fs := keysFlags("shred", stderr)
	tenant := fs.String("tenant", "", "the tenant whose keys to destroy (required)")
	yes := fs.Bool("yes", false, "confirm: the tenant's encrypted PHI becomes unreadable for good")
	if err := parseKeysFlags(fs, args); err != nil {
		return err
	}
	if *tenant == "" {
		return usageError("keys shred: -tenant is required")
	}
	if !*yes {
		return usageError(fmt.Sprintf("keys shred: destroying tenant %s's data keys makes its encrypted PHI unreadable for good; add -yes to confirm", *tenant))
	}
	env, err := openKeysEnv(ctx, "shred", false, logger)
	if err != nil {
		return err
	}
	defer env.close()
	n, err := env.st.DestroyTenantKeys(ctx, *tenant)
	if err != nil {
		return err
	}
	if n == 0 {
		known, _ := env.st.Tenants(ctx)
		return fmt.Errorf("keys shred: tenant %q has no keys: nothing destroyed (tenants: %s)", *tenant, strings.Join(known, ", "))
	}
	fmt.Fprintf(stdout, "destroyed %d keys of tenant %s: its encrypted PHI can no longer be decrypted\n", n, *tenant)
	provider := "the key provider"
	if env.prov != nil {
		if info, err := env.prov.Info(ctx); err == nil {
			provider = fmt.Sprintf("%s (KEK versions %d to %d accepted now)", env.prov.Name(), info.MinDecryptionVersion, info.LatestVersion)
		} else {
			provider = env.prov.Name()
		}
	}
	fmt.Fprintf(stderr, `WARNING: tenant %[1]s's wrapped keys still exist in database backups (and replicas, dumps) taken before now,
and %[2]s can unwrap them as long as it accepts the KEK version they are wrapped under.
To make those copies useless, run:
    fhirgate keys rotate -min-decryption-version
which adds a KEK version, rewraps every remaining key under it and then refuses the older versions.
With Vault, the old key versions still exist until trimmed (vault write transit/keys/<key>/trim
min_available_version=<latest>: irreversible); the local keyring keeps them in its file.
Running gateways may keep tenant %[1]s's unwrapped keys in memory for up to FHIRGATE_PHI_KEY_TTL (%[3]s);
restart them to drop the keys now.
`, *tenant, provider, env.pc.KeyTTL)
	return nil
}
