import sys, warnings; warnings.filterwarnings("ignore")
import pandas as pd
pd.set_option('display.width', 250); pd.set_option('display.max_colwidth', 80)
d = pd.read_csv(sys.argv[1])
d['fid_ok'] = (d.fidelity >= 0.9) & (d.max_conditions <= 3)
d['dist_ok'] = d.min_groups >= 3
d['churn_ok'] = (d.churn_min <= 0.05) & (d.churn_max >= 0.5)
d['k_ok'] = d.k.between(4, 6)
d['share_ok'] = d.min_share >= 0.05
ok = ['fid_ok', 'dist_ok', 'churn_ok', 'k_ok', 'share_ok']
d['n_ok'] = d[ok].sum(axis=1)
c = ['cols', 'binary', 'log', 'k_req', 'extra', 'fidelity', 'max_conditions', 'k', 'min_share',
     'churn_min', 'churn_max', 'min_groups', 'n_seg_3groups', 'rule_min_groups', 'rule_churn_min', 'rule_churn_max', 'rule_min_share']
c = [x for x in c if x in d]
print(d[d.n_ok == 5][c].to_string())
# best near misses on each single target among configs meeting the other four
for miss in ok:
    others = [o for o in ok if o != miss]
    sub = d[d[others].all(axis=1) & ~d[miss]]
    key = {'fid_ok': 'fidelity', 'dist_ok': 'min_groups', 'churn_ok': 'churn_max', 'k_ok': 'k', 'share_ok': 'min_share'}[miss]
    print(f"\n== meet all but {miss}: {len(sub)} configs; best by {key}")
    print(sub.sort_values([key, 'fidelity'], ascending=False)[c].head(8).to_string())
