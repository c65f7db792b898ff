set -e
for g in 2048 3072 4096 6144 8192; do
  openssl genpkey -algorithm DH -pkeyopt group:ffdhe$g -out a$g.pem 2>/dev/null
  openssl genpkey -algorithm DH -pkeyopt group:ffdhe$g -out b$g.pem 2>/dev/null
  openssl pkey -in b$g.pem -pubout -out bpub$g.pem
  openssl pkeyutl -derive -inkey a$g.pem -peerkey bpub$g.pem -pkeyopt dh_pad:1 -out s$g.bin
  python3 - $g <<'PY'
import sys,subprocess,re
g=sys.argv[1]
def fields(f):
    t=subprocess.run(["openssl","pkey","-in",f,"-text","-noout"],capture_output=True,text=True).stdout
    out={}
    cur=None
    for line in t.splitlines():
        m=re.match(r'^(private-key|public-key|P|G|recommended-private-length|GROUP):?\s*(.*)$',line)
        if m: cur=m.group(1); out[cur]=m.group(2).strip(); continue
        if cur and line.startswith(' '): out[cur]+=line.strip()
        else: cur=None
    return {k:v.replace(':','') for k,v in out.items()}
a=fields(f"a{g}.pem"); b=fields(f"b{g}.pem")
s=open(f"s{g}.bin","rb").read().hex()
print(f"group={g}\nx_a={a['private-key']}\npub_a={a['public-key']}\npub_b={b['public-key']}\nshared={s}")
PY
done
