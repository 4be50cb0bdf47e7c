"""Patch k-means baseline: PSNR of 64 px emoji validation images when each 4x4 patch is replaced by its nearest of K centroids
(no decoder, no context). Usage: python3 kmeans_patches.py K [P] (after dvae_recipe_data.py)."""
import numpy as np, time, sys
K=int(sys.argv[1]); P=int(sys.argv[2]) if len(sys.argv)>2 else 4
tr=np.load('/tmp/exp/train.npy'); va=np.load('/tmp/exp/val.npy')[:256]
def patches(a):
    n=a.shape[0]; x=a.astype(np.float32)/255
    x=x.reshape(n,3,64//P,P,64//P,P).transpose(0,2,4,1,3,5).reshape(n*(64//P)**2,3*P*P); return x
rng=np.random.default_rng(0)
X=patches(tr[rng.choice(len(tr),1500,replace=False)]); X=X[rng.choice(len(X),150000,replace=False)]
C=X[rng.choice(len(X),K,replace=False)].copy()
for it in range(15):
    d=(X**2).sum(1)[:,None]-2*X@C.T+(C**2).sum(1)[None]; a=d.argmin(1)
    for k in range(K):
        m=a==k
        if m.any(): C[k]=X[m].mean(0)
        else: C[k]=X[rng.integers(len(X))]
V=patches(va); d=(V**2).sum(1)[:,None]-2*V@C.T+(C**2).sum(1)[None]; a=d.argmin(1); R=C[a]
err=((R-V)**2).reshape(256,-1).mean(1); print(K,P,'psnr',(-10*np.log10(err)).mean())
