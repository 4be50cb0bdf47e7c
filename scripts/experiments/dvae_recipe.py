"""dVAE recipe experiments in PyTorch (the released architecture at dvae-emoji shapes, as bench/ref/torch_dvae.py), used to
search for codebook-usage fixes quickly; each run logs validation PSNR (argmax codes), PSNR with soft codes and codebook
perplexity to /tmp/exp/NAME.jsonl. Flags: --kminit N (k-means init of the output conv from N images), --warm N (decoder
warm-up), --st 1 (straight-through), --usage W, --kl W, --elr S (encoder lr scale), --bal G (logit-bias balancing), --reseed R (every R updates, each code unused since the last re-seed copies a
busy code's encoder row (plus noise) and decoder column, Adam moments reset; measured at 500 updates with tau over
500: 17.3 dB, perplexity 75, 250-440 codes re-seeded each time: they die again, no gain).
Also: --device cuda (the whole run on a GPU), --data/--out (folders of the arrays and of the logs), --mse W (a pixel
squared-error term beside logit-Laplace), --loss mse (squared error alone: a Gaussian of sigma 0.05 in the mapped space,
the engine's train.recon_loss: gaussian), --ema D (also evaluate an exponential average of the weights), --dec_hid and
--dec_blk (decoder width and depth apart from the encoder's).
Example: python3 dvae_recipe.py --steps 1500 --tau_steps 750 --kl 0 --usage 4 --kminit 1000 --name G"""
import argparse, json, math, time, sys
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F
p=argparse.ArgumentParser()
p.add_argument('--n_hid',type=int,default=64); p.add_argument('--n_groups',type=int,default=3); p.add_argument('--n_blk',type=int,default=1)
p.add_argument('--vocab',type=int,default=1024); p.add_argument('--batch',type=int,default=16); p.add_argument('--lr',type=float,default=1e-3)
p.add_argument('--lr_min',type=float,default=1.25e-5); p.add_argument('--steps',type=int,default=3000)
p.add_argument('--kl',type=float,default=0.0); p.add_argument('--kl_ramp',type=int,default=500)
p.add_argument('--tau0',type=float,default=1.0); p.add_argument('--tau1',type=float,default=1/16); p.add_argument('--tau_steps',type=int,default=1500)
p.add_argument('--usage',type=float,default=0.0); p.add_argument('--st',type=int,default=0)
p.add_argument('--clip',type=float,default=0); p.add_argument('--eval_every',type=int,default=250); p.add_argument('--minutes',type=float,default=1e9)
p.add_argument('--threads',type=int,default=2); p.add_argument('--loss',default='ll'); p.add_argument('--name',default='x')
p.add_argument('--bal',type=float,default=0); p.add_argument('--kminit',type=int,default=0); p.add_argument('--kmscale',type=float,default=5); p.add_argument('--warm',type=int,default=0); p.add_argument('--elr',type=float,default=1); p.add_argument('--n_init',type=int,default=128); p.add_argument('--wd',type=float,default=1e-4); p.add_argument('--reseed',type=int,default=0); p.add_argument('--reseed_until',type=int,default=10**9)
p.add_argument('--device',default='cpu'); p.add_argument('--data',default='/tmp/exp'); p.add_argument('--out',default='/tmp/exp')
p.add_argument('--mse',type=float,default=0); p.add_argument('--ema',type=float,default=0); p.add_argument('--dec_hid',type=int,default=0); p.add_argument('--dec_blk',type=int,default=0)
a=p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0); dev=torch.device(a.device)
torch.backends.cuda.matmul.allow_tf32=False; torch.backends.cudnn.allow_tf32=False; torch.backends.cudnn.benchmark=True
a.dec_hid=a.dec_hid or a.n_hid; a.dec_blk=a.dec_blk or a.n_blk
EPS=0.1
tr=torch.from_numpy(np.load(f'{a.data}/train.npy')).to(dev); va=(torch.from_numpy(np.load(f'{a.data}/val.npy')[:256]).float()/255).to(dev)
class Conv(nn.Conv2d):
    def __init__(s,i,o,k):
        super().__init__(i,o,k,padding=(k-1)//2); nn.init.normal_(s.weight,std=1/math.sqrt(i*k*k)); nn.init.zeros_(s.bias)
class Block(nn.Module):
    def __init__(s,i,o,nl,ks):
        super().__init__(); h=o//4; s.g=1/nl**2; s.id=Conv(i,o,1) if i!=o else nn.Identity(); w=[i,h,h,h,o]; L=[]
        for j,k in enumerate(ks): L+=[nn.ReLU(),Conv(w[j],w[j+1],k)]
        s.r=nn.Sequential(*L)
    def forward(s,x): return s.id(x)+s.g*s.r(x)
def enc():
    L=[Conv(3,a.n_hid,7)]; nl=a.n_groups*a.n_blk; w=a.n_hid
    for g in range(a.n_groups):
        o=a.n_hid*2**g
        for b in range(a.n_blk): L.append(Block(w if b==0 else o,o,nl,(3,3,3,1)))
        w=o
        if g<a.n_groups-1: L.append(nn.MaxPool2d(2))
    return nn.Sequential(*L,nn.ReLU(),Conv(w,a.vocab,1))
def dec():
    L=[Conv(a.vocab,a.n_init,1)]; nl=a.n_groups*a.dec_blk; w=a.n_init
    for g in range(a.n_groups):
        o=a.dec_hid*2**(a.n_groups-1-g)
        for b in range(a.dec_blk): L.append(Block(w if b==0 else o,o,nl,(1,3,3,3)))
        w=o
        if g<a.n_groups-1: L.append(nn.Upsample(scale_factor=2,mode='nearest'))
    return nn.Sequential(*L,nn.ReLU(),Conv(w,6,1))
E,D=enc().to(dev),dec().to(dev)
if a.kminit:
    with torch.no_grad():
        trunk=E[:-1]; g0=torch.Generator().manual_seed(2); idx=torch.randperm(len(tr),generator=g0)[:a.kminit].to(dev)
        H=torch.cat([trunk((1-2*EPS)*tr[idx[i:i+64]].float()/255+EPS) for i in range(0,len(idx),64)])
        H=H.permute(0,2,3,1).reshape(-1,H.shape[1]); H=H[torch.randperm(len(H),generator=g0)[:60000].to(dev)]
        Cc=H[torch.randperm(len(H),generator=g0)[:a.vocab].to(dev)].clone()
        for it in range(12):
            d=(H*H).sum(1,keepdim=True)-2*H@Cc.T+(Cc*Cc).sum(1)[None]; asg=d.argmin(1)
            cnt=torch.bincount(asg,minlength=a.vocab).float(); S=torch.zeros_like(Cc).index_add_(0,asg,H)
            dead=cnt==0; Cc[~dead]=S[~dead]/cnt[~dead,None]
            if dead.any(): Cc[dead]=H[torch.randperm(len(H),generator=g0)[:int(dead.sum())].to(dev)]
        lg0=2*H@Cc.T-(Cc*Cc).sum(1)[None]; sc=a.kmscale/lg0.std(1).mean()
        E[-1].weight.copy_((2*sc*Cc)[:,:,None,None]); E[-1].bias.copy_(-sc*(Cc*Cc).sum(1))
        pr=cnt/cnt.sum(); print('kmeans init ppl',math.exp(-(pr[pr>0]*pr[pr>0].log()).sum().item()),'scale',sc.item(),flush=True)
params=list(E.parameters())+list(D.parameters())
groups=[]
for mod,m in ((E,a.elr),(D,1.0)):
    ps=list(mod.parameters())
    groups+=[{'params':[q for q in ps if q.dim()>1],'m':m},{'params':[q for q in ps if q.dim()<=1],'weight_decay':0,'m':m}]
opt=torch.optim.AdamW(groups,lr=a.lr,betas=(0.9,0.999),eps=1e-8,weight_decay=a.wd)
def cos(v0,v1,n,s): return v1+(v0-v1)*0.5*(1+math.cos(math.pi*min(s,n)/n))
def unmap(y): return ((y-EPS)/(1-2*EPS)).clamp(0,1)
import copy
EE,DE=(copy.deepcopy(E),copy.deepcopy(D)) if a.ema>0 else (None,None)
def evaluate(E=E,D=D):
    E.eval(); D.eval(); ps=[];pss=[]; hist=torch.zeros(a.vocab,device=dev)
    with torch.no_grad():
        for i in range(0,len(va),64):
            x=va[i:i+64]; lg=E((1-2*EPS)*x+EPS); c=lg.argmax(1)
            hist+=torch.bincount(c.flatten(),minlength=a.vocab)
            z=F.one_hot(c,a.vocab).permute(0,3,1,2).float(); y=unmap(torch.sigmoid(D(z)[:,:3]))
            mse=((y-x)**2).mean((1,2,3)); ps.append(-10*torch.log10(mse.clamp_min(1e-10)))
            tau=cos(a.tau0,a.tau1,a.tau_steps,step)
            ys=unmap(torch.sigmoid(D(F.softmax(lg/tau,1))[:,:3])); pss.append(-10*torch.log10(((ys-x)**2).mean((1,2,3)).clamp_min(1e-10)))
    pr=hist/hist.sum(); ppl=math.exp(-(pr[pr>0]*pr[pr>0].log()).sum().item())
    E.train(); D.train()
    return torch.cat(ps).mean().item(), torch.cat(pss).mean().item(), ppl
g=torch.Generator().manual_seed(1); perm=torch.randperm(len(tr),generator=g).to(dev); pos=0
t0=time.time(); step=0
use=torch.zeros(a.vocab)
print(json.dumps(dict(zip(['psnr','soft','ppl'],evaluate()))),flush=True)
log=open(f'{a.out}/{a.name}.jsonl','w')
while step<a.steps and (time.time()-t0)/60<a.minutes:
    if pos+a.batch>len(tr): perm=torch.randperm(len(tr),generator=g).to(dev); pos=0
    x=tr[perm[pos:pos+a.batch]].float()/255; pos+=a.batch
    lr=cos(a.lr,a.lr_min,a.steps,step); 
    for gr in opt.param_groups: gr['lr']=lr*gr['m']
    tau=cos(a.tau0,a.tau1,a.tau_steps,step); beta=a.kl*min(1,step/max(1,a.kl_ramp))
    xm=(1-2*EPS)*x+EPS; lg=E(xm)
    gn=-torch.log(-torch.log(torch.rand_like(lg).clamp_(1e-10,1-1e-7)))
    z=F.softmax((lg+gn)/tau,1)
    if step<a.warm: lg=lg.detach(); z=F.one_hot(lg.argmax(1),a.vocab).permute(0,3,1,2).float()
    if a.st: z=(F.one_hot(z.argmax(1),a.vocab).permute(0,3,1,2).float()-z).detach()+z
    st=D(z); mu,lnb=st[:,:3],st[:,3:]
    if a.loss=='ll':
        lx=torch.log(xm)-torch.log1p(-xm)
        rec=(torch.abs(lx-mu)*torch.exp(-lnb)+lnb+math.log(2)+torch.log(xm)+torch.log1p(-xm)).sum()/a.batch
    else:
        rec=((unmap(torch.sigmoid(mu))-x)**2).sum()/a.batch*a.loss_scale if False else ((torch.sigmoid(mu)-xm)**2).sum()/a.batch*200
    lq=F.log_softmax(lg,1); kl=(lq.exp()*(lq+math.log(a.vocab))).sum()/a.batch
    if a.mse>0: rec=rec+a.mse*((torch.sigmoid(mu)-xm)**2).sum()/a.batch
    loss=rec+beta*kl
    if a.usage>0:
        qm=lq.exp().mean((0,2,3)); ug=(qm*(qm+1e-12).log()).sum()+math.log(a.vocab); loss=loss+a.usage*ug*lg.shape[2]*lg.shape[3]
    opt.zero_grad(set_to_none=True); loss.backward()
    if a.clip>0: torch.nn.utils.clip_grad_norm_(params,a.clip)
    opt.step(); step+=1
    if a.ema>0:
        with torch.no_grad():
            for m,me in ((E,EE),(D,DE)):
                for q,qe in zip(m.parameters(),me.parameters()): qe.lerp_(q,1-a.ema)
    if a.bal>0:
        with torch.no_grad():
            cnt=torch.bincount(lg.argmax(1).flatten(),minlength=a.vocab).float()
            E[-1].bias += a.bal*torch.sign(cnt.mean()-cnt)
    if a.reseed:
        with torch.no_grad():
            use+=torch.bincount(lg.argmax(1).flatten(),minlength=a.vocab).float()
            if step%a.reseed==0 and step<=a.reseed_until:
                dead=(use==0).nonzero().flatten()
                if len(dead):
                    src=torch.multinomial(use,len(dead),replacement=True)
                    We,be,Wd=E[-1].weight,E[-1].bias,D[0].weight
                    We[dead]=We[src]+0.01*We[src].abs().mean()*torch.randn_like(We[src]); be[dead]=be[src]; Wd[:,dead]=Wd[:,src]
                    for q,sl in ((We,(dead,)),(be,(dead,)),(Wd,(slice(None),dead))):
                        st_=opt.state.get(q,{})
                        for k in ('exp_avg','exp_avg_sq'):
                            if k in st_: st_[k][sl]=0
                print(json.dumps(dict(step=step,reseeded=len(dead))),flush=True)
                use.zero_()
    if step%a.eval_every==0 or step==a.steps:
        ph,ps_,ppl=evaluate(); r=dict(step=step,min=round((time.time()-t0)/60,2),psnr=round(ph,2),soft=round(ps_,2),ppl=round(ppl,1),tau=round(tau,3),rec=round(rec.item()/(3*64*64),3))
        if a.ema>0: r['ema']=round(evaluate(EE,DE)[0],2)
        print(json.dumps(r),flush=True); log.write(json.dumps(r)+'\n'); log.flush()
torch.save({'E':E.state_dict(),'D':D.state_dict()},f'{a.out}/{a.name}.pt')
