package restore

import (
	"strings"
	"testing"
)

func TestResolveMapping(t *testing.T) {
	maps := func(specs ...string) []PathMap {
		m, err := ParseMaps(specs)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cases := []struct {
		name      string
		src, dst  []string
		explicit  []PathMap
		want      string // Mapping.String(), or "" with an error
		auto      bool
		errSubstr []string
	}{
		{name: "same paths", src: []string{"/srv/a", "/srv/b/"}, dst: []string{"/srv/b", "/srv/a"}, want: "/srv/a → /srv/a, /srv/b → /srv/b"},
		{name: "one each", src: []string{"/srv/old"}, dst: []string{"/srv/new"}, want: "/srv/old → /srv/new", auto: true},
		{name: "installer config into the module's project dir", src: []string{"/opt/pangolin/config"}, dst: []string{"/var/lib/pangolin"}, want: "/opt/pangolin/config → /var/lib/pangolin/config", auto: true},
		{name: "project dir back into a config dir", src: []string{"/var/lib/pangolin"}, dst: []string{"/root/config"}, want: "/var/lib/pangolin/config → /root/config", auto: true},
		{name: "config onto config", src: []string{"/root/config"}, dst: []string{"/opt/pangolin/config"}, want: "/root/config → /opt/pangolin/config", auto: true},
		{name: "two need maps", src: []string{"/a", "/b"}, dst: []string{"/c", "/d"}, errSubstr: []string{"--map SRC=DST", "Unmapped snapshot paths: /a, /b"}},
		{name: "two mapped", src: []string{"/a", "/b"}, dst: []string{"/c", "/d"}, explicit: maps("/a=/d", "/b=/c"), want: "/b → /c, /a → /d"},
		{name: "partly identity", src: []string{"/a", "/b"}, dst: []string{"/a", "/d"}, explicit: maps("/b=/d"), want: "/a → /a, /b → /d"},
		{name: "two into one", src: []string{"/root/config", "/root/extra"}, dst: []string{"/var/lib/pangolin"}, explicit: maps("/root/config=/var/lib/pangolin/config", "/root/extra=/var/lib/pangolin/extra"), want: "/root/config → /var/lib/pangolin/config, /root/extra → /var/lib/pangolin/extra"},
		{name: "unknown source", src: []string{"/a"}, dst: []string{"/c"}, explicit: maps("/x=/c"), errSubstr: []string{"the snapshot has no path /x"}},
		{name: "destination outside", src: []string{"/a"}, dst: []string{"/c"}, explicit: maps("/a=/elsewhere"), errSubstr: []string{"/elsewhere is not one of h's data paths"}},
		{name: "unmapped left over", src: []string{"/a", "/b"}, dst: []string{"/c", "/d"}, explicit: maps("/a=/c"), errSubstr: []string{"snapshot path /b has no place on h"}},
		{name: "target path left empty", src: []string{"/a"}, dst: []string{"/c", "/d"}, explicit: maps("/a=/c"), errSubstr: []string{"data path /d would receive nothing"}},
		{name: "overlapping destinations", src: []string{"/a", "/b"}, dst: []string{"/c"}, explicit: maps("/a=/c", "/b=/c/x"), errSubstr: []string{"both land in"}},
		{name: "agent reports a relative path", src: []string{"/a"}, dst: []string{"../etc"}, errSubstr: []string{"not a clean absolute directory"}},
		{name: "agent reports the root", src: []string{"/a"}, dst: []string{"/"}, errSubstr: []string{"not a clean absolute directory"}},
		{name: "agent reports nothing", src: []string{"/a"}, dst: nil, errSubstr: []string{"reports no data paths"}},
		{name: "overlapping sources", src: []string{"/a"}, dst: []string{"/c", "/d"}, explicit: maps("/a=/c", "/a/x=/d"), errSubstr: []string{"overlap in the snapshot"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ResolveMapping(tc.src, tc.dst, tc.explicit, "h")
			if tc.errSubstr != nil {
				if err == nil {
					t.Fatalf("got %s, want an error", m)
				}
				for _, s := range append(tc.errSubstr, "Nothing was changed") {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q lacks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.String() != tc.want || m.Auto != tc.auto {
				t.Errorf("got %s (auto %v), want %s (auto %v)", m, m.Auto, tc.want, tc.auto)
			}
		})
	}
}

func TestParseMapsRefuses(t *testing.T) {
	for _, bad := range []string{"/a", "a=/b", "/a=b", "=/b", "/a=", "/=/b", "/a=/"} {
		if _, err := ParseMaps([]string{bad}); err == nil {
			t.Errorf("--map %q accepted", bad)
		}
	}
}
